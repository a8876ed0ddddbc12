"""Periodic jobs of stock."""
from __future__ import annotations

from aiohttp import web

from libs.logging import get_logger
from services.stock import metrics
from services.stock.usecases import STOCK, now_ms

log = get_logger("stock.jobs")


async def release_expired_reservations(app: web.Application) -> int:
    """Release every held reservation past its expiry; each in its own transaction."""
    stock = app[STOCK]
    released = 0
    at = now_ms()
    for doc in await stock.mongo.read_committed(lambda: stock.reservations.expired(at, stock.settings.sweeper_batch)):
        _, changed = await stock.mongo.transaction(
            lambda s, order_id=doc["order_id"]: stock.release(order_id, "expired", s, only_if_expired_at=at))
        if changed:
            released += 1
            metrics.RELEASES.labels("expired").inc()
    if released:
        log.info("stock.reservations_expired", released=released)
    return released
