"""Who the client is: the address limits are counted against."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: Address | None, proxies: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in proxies)


def client_address(request: web.Request, trusted_proxies: Sequence[Network]) -> str:
    """The peer's address, unless the peer is a trusted proxy: then the
    nearest address in X-Forwarded-For that is not a trusted proxy, read
    from the right (the entries to its left are the client's own to write).
    A header from any other peer is ignored."""
    peer = request.remote or ""
    current = _address(peer)
    if not _trusted(current, trusted_proxies):
        return str(current) if current is not None else peer
    hops = [
        hop for header in request.headers.getall("X-Forwarded-For", ()) for hop in header.split(",")
    ]
    for hop in reversed(hops):
        named = _address(hop)
        if named is None:
            # Unreadable: stop believing the chain at the last proxy that wrote it.
            break
        current = named
        if not _trusted(named, trusted_proxies):
            break
    return str(current)
