from aiohttp import web

from libs.openapi import add_openapi_route
from libs.service import MONGO, OUTBOX, add_periodic_job, create_service_app
from services.settlement.consumers import subscribe
from services.settlement.demo import load_start_up_data
from services.settlement.handlers import routes
from services.settlement.jobs import close_due_periods
from services.settlement.repository import INDEXES
from services.settlement.settings import SettlementSettings
from services.settlement.usecases import (JOURNAL, PAYOUTS, RECONCILIATIONS, SPLIT_RULES, STATEMENTS, Journal,
                                          Payouts, Reconciliations, SplitRules, Statements)


def create_app(settings: SettlementSettings | None = None) -> web.Application:
    settings = settings or SettlementSettings()
    app = create_service_app(settings, indexes=INDEXES, routes=routes, subscribe=subscribe,
                             client_max_size=settings.max_upload_bytes)

    async def use_cases(app: web.Application):
        mongo, outbox = app[MONGO], app[OUTBOX]
        app[JOURNAL] = Journal(mongo, outbox)
        app[SPLIT_RULES] = SplitRules(mongo)
        app[STATEMENTS] = Statements(mongo, outbox, settings)
        app[PAYOUTS] = Payouts(mongo, app[JOURNAL], app[STATEMENTS])
        app[RECONCILIATIONS] = Reconciliations(mongo)
        await load_start_up_data(app[SPLIT_RULES], app[JOURNAL], settings.demo_data)
        yield

    app.cleanup_ctx.append(use_cases)
    if settings.auto_close_enabled:
        add_periodic_job(app, "settlement-scheduled-close", settings.auto_close_interval_s, close_due_periods)
    add_openapi_route(app, "Settlement", description="Split rules, journal, statements, payouts, reconciliation")
    return app
