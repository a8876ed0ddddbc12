"""Which webhook URLs may be registered. Pure: looks at the URL only (no DNS lookups)."""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

INTERNAL_SUFFIXES = (".local", ".internal", ".localdomain", ".svc", ".cluster.local")


def private_target(url: str) -> str | None:
    """Why `url` points inside our network (a reason), or None when it looks public.

    Literal addresses that are not globally routable (loopback, private, shared carrier-grade NAT,
    link-local such as cloud metadata, reserved, documentation ranges), `localhost` and internal DNS suffixes
    are refused. A public name that resolves to a private address is caught at send time, where the webhook
    channel resolves and pins the name to public addresses only; the deployment's egress policy is the third
    line of defence.
    """
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if not host:
        return "the URL has no host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        mapped = getattr(address, "ipv4_mapped", None) or address  # ::ffff:127.0.0.1 is 127.0.0.1
        if not mapped.is_global or mapped.is_multicast:
            return f"{host} is not a public address"
        return None
    if host == "localhost" or host.endswith(".localhost") or host.endswith(INTERNAL_SUFFIXES) or "." not in host:
        return f"{host} is an internal name"
    return None
