"""Which webhook URLs may be registered. Pure: looks at the URL only (no DNS lookups)."""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

INTERNAL_SUFFIXES = (".local", ".internal", ".localdomain", ".svc", ".cluster.local")


def private_target(url: str) -> str | None:
    """Why `url` points inside our network (a reason), or None when it looks public.

    Literal loopback, private, link-local (cloud metadata) and reserved addresses, `localhost` and internal
    DNS suffixes are refused. A public name that resolves to a private address is not caught here; the
    network policy of the deployment is the second line of defence.
    """
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if not host:
        return "the URL has no host"
    if host == "localhost" or host.endswith(".localhost") or host.endswith(INTERNAL_SUFFIXES) or "." not in host:
        return f"{host} is an internal name"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if (address.is_loopback or address.is_private or address.is_link_local or address.is_reserved
            or address.is_multicast or address.is_unspecified):
        return f"{host} is not a public address"
    return None
