"""Who the client is, by address: the TCP peer, or what a proxy we trust says it forwarded. Pure.

`X-Forwarded-For` is honoured only when the TCP peer is inside one of the configured proxy ranges
(`trusted_proxies`); then the entries are read from the right, skipping hops that are themselves trusted
proxies, and the first one that is not is the client. Anything left of that entry was written by the client
and is never believed. Buckets keyed on an address use `address_key`: an IPv6 client owns a whole /64, so
keying on the full address would give it 2^64 fresh budgets.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(ranges: Iterable[str]) -> tuple[Network, ...]:
    """CIDR ranges (a bare address is a /32 or /128); a malformed one is a settings error at start-up."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in ranges if value.strip())


def _address(value: str | None) -> Address | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1:value.index("]")]
    elif value.count(":") == 1:  # "203.0.113.7:51234"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, proxies: tuple[Network, ...]) -> bool:
    return any(address.version == network.version and address in network for network in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: tuple[Network, ...]) -> str:
    """The client's address as a string ("unknown" when even the peer is not an address)."""
    peer_address = _address(peer)
    if peer_address is None:
        return peer or "unknown"
    if not forwarded_for or not _trusted(peer_address, proxies):
        return str(peer_address)
    client = peer_address
    for hop in reversed(forwarded_for.split(",")):
        address = _address(hop)
        if address is None:
            break  # garbage in the chain: believe nothing left of it
        client = address
        if not _trusted(address, proxies):
            break
    return str(client)


def address_key(address: str) -> str:
    """The bucket key of an address: itself for IPv4, its /64 for IPv6."""
    parsed = _address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64)))
    return str(parsed) if parsed is not None else address
