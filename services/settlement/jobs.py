"""Periodic jobs: the scheduled closing of ended periods (statements frozen and announced)."""
from __future__ import annotations

from aiohttp import web

from libs.clock import utcnow
from services.settlement.usecases import STATEMENTS


async def close_due_periods(app: web.Application) -> None:
    """Close yesterday, last week and last month once they have been over for the grace period."""
    await app[STATEMENTS].close_due(utcnow())
