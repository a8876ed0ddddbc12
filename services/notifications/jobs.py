"""Periodic jobs: the delivery worker (sends due deliveries, retries, gives up) and the campaign runner."""
from __future__ import annotations

from aiohttp import web

from services.notifications.usecases import CAMPAIGNS, DELIVERY_WORKER


async def deliver_due(app: web.Application) -> int:
    return await app[DELIVERY_WORKER].deliver_due()


async def run_campaigns(app: web.Application) -> None:
    await app[CAMPAIGNS].run()
