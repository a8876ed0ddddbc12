"""Periodic jobs: the scheduled closing of ended periods (statements frozen and announced)."""
from __future__ import annotations

from datetime import timedelta

from aiohttp import web

from libs.http import SETTINGS
from libs.logging import get_logger
from libs.service import MONGO
from services.settlement.domain.periods import due_for_closing
from services.settlement.ledger import Ledger
from services.settlement.repository import now_utc

log = get_logger("settlement.jobs")


async def close_due_periods(app: web.Application) -> None:
    """Close yesterday, last week and last month once they have been over for the grace period. Closing is
    idempotent (statements already frozen are kept), so running it again only adds accounts opened since."""
    settings = app[SETTINGS]
    ledger = Ledger(app)
    for period in due_for_closing(now_utc(), timedelta(hours=settings.auto_close_grace_hours),
                                  settings.period_utc_offset_minutes):
        _, closed, _ = await app[MONGO].transaction(lambda session, period=period: ledger.close_period(
            session, period.granularity, period.label, None, "system:scheduled-close"))
        if closed:
            log.info("settlement.period_closed", granularity=period.granularity, period=str(period.label),
                     statements=len(closed))
