"""Periodic duties: expire unpaid orders, cancel uncollected pickups, auto-complete shipped orders,
compensate checkouts interrupted by a crash, and retry follow-up actions that failed."""
from __future__ import annotations

from aiohttp import web

from libs.logging import get_logger
from services.orders.usecases import EXPIRY

log = get_logger("orders.jobs")


async def sweep(app: web.Application) -> None:
    done = await app[EXPIRY].sweep()
    if any(done.values()):
        log.info("orders.swept", **done)
