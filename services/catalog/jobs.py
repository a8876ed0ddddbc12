"""Periodic jobs of catalog."""
from __future__ import annotations

from aiohttp import web

from libs.logging import get_logger
from services.catalog import metrics
from services.catalog.usecases import CATALOG, now_ms

log = get_logger("catalog.jobs")


async def apply_due_price_changes(app: web.Application) -> int:
    """Apply scheduled price changes whose time has come; each in its own transaction, in effective order."""
    catalog = app[CATALOG]
    applied = 0
    for schedule in await catalog.mongo.read_committed(lambda: catalog.prices.due(now_ms())):
        status = await catalog.mongo.transaction(lambda s, sid=schedule["_id"]: catalog.apply_schedule(sid, s))
        if status == "applied":
            applied += 1
            metrics.PRICE_CHANGES.labels("scheduled").inc()
        elif status == "rejected":
            metrics.PRICE_REJECTIONS.labels("scheduled-out-of-band").inc()
            log.warning("catalog.scheduled_price_rejected", schedule_id=schedule["_id"], sku_id=schedule["sku_id"])
    return applied
