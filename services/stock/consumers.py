"""Bus entrypoints of stock: thin handlers run inside the inbox transaction (exactly-once effect)."""
from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus import Bus, Envelope
from libs.logging import get_logger
from services.stock import metrics
from services.stock.domain.model import StockError
from services.stock.usecases import STOCK

log = get_logger("stock.consumers")


async def on_order_cancelled(app: web.Application, envelope: Envelope, session) -> None:
    """Safety net: release the order's held stock if orders could not release it synchronously."""
    order_id = envelope.data.get("order_id") or envelope.subject
    stock = app[STOCK]
    if await stock.reservations.by_order(order_id, session) is None:
        return  # the order never reserved (rejected, or cancelled before reserving)
    try:
        _, changed = await stock.release(order_id, "order_cancelled", session)
    except StockError as error:
        # Committed goods have left; a cancelled-after-commit order is a return, not a release.
        log.warning("stock.cancel_after_commit", order_id=order_id, code=error.code)
        return
    if changed:
        stock.mongo.after_commit(metrics.RELEASES.labels("order_cancelled").inc)


def subscribe(app: web.Application, bus: Bus) -> None:
    bus.on("orders.order.cancelled", partial(on_order_cancelled, app))
