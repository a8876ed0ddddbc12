"""Bus entrypoints of stock: thin; they call the same use cases as HTTP, inside the inbox's unit of work."""
from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus import Bus, Envelope
from services.stock.usecases import RESERVATIONS


async def on_order_cancelled(app: web.Application, envelope: Envelope, _session) -> None:
    """Safety net: release the order's held stock if orders could not release it synchronously."""
    await app[RESERVATIONS].release_for_cancelled_order(envelope.data.get("order_id") or envelope.subject)


def subscribe(app: web.Application, bus: Bus) -> None:
    bus.on("orders.order.cancelled", partial(on_order_cancelled, app))
    # A checkout that failed: the same release, and the same tombstone against a reservation arriving late.
    bus.on("orders.order.rejected", partial(on_order_cancelled, app))
