"""Bus entrypoints of orders.

Orders orchestrates its saga with synchronous, idempotent calls (the user is waiting at checkout), so it
needs no event from another service to make progress; stock reservation expiry is its own (the
reservation TTL outlives the payment window, and orders releases explicitly). Nothing is subscribed yet.
"""
from __future__ import annotations

from aiohttp import web

from libs.bus import Bus


def subscribe(app: web.Application, bus: Bus) -> None:
    return None
