"""Bus entrypoints of orders: thin handlers run inside the inbox transaction (exactly-once effect); the
use case they call joins it.

Orders drives its saga with synchronous, idempotent calls; the bus tells it what happened elsewhere on its
own: stock letting a reservation expire (orders was down, or slow to expire the order itself) must not
leave an order payable without its goods.
"""
from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus import Bus, Envelope
from services.orders.usecases import EXPIRY


async def on_stock_released(app: web.Application, envelope: Envelope, _session) -> None:
    """A reservation that expired at stock cancels its order if that order is still waiting for payment."""
    if envelope.data.get("reason") != "expired":
        return  # released at orders' request (cancel, expiry, rejection): orders already knows
    expiry = app.get(EXPIRY)
    if expiry is None:  # consuming starts a moment before the use cases are assembled
        raise RuntimeError("orders is still starting; the event is retried")
    await expiry.reservation_expired(envelope.data["order_id"])


def subscribe(app: web.Application, bus: Bus) -> None:
    bus.on("stock.released", partial(on_stock_released, app))
