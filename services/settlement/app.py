from aiohttp import web

from libs.openapi import add_openapi_route
from libs.service import add_periodic_job, create_service_app
from services.settlement.consumers import subscribe
from services.settlement.demo import load_start_up_data
from services.settlement.handlers import routes
from services.settlement.jobs import close_due_periods
from services.settlement.repository import INDEXES
from services.settlement.settings import SettlementSettings


def create_app(settings: SettlementSettings | None = None) -> web.Application:
    settings = settings or SettlementSettings()
    app = create_service_app(settings, indexes=INDEXES, routes=routes, subscribe=subscribe,
                             client_max_size=settings.max_upload_bytes)
    # Runs after the kit's resources started (on_startup handlers follow the cleanup contexts).
    app.on_startup.append(load_start_up_data)
    if settings.auto_close_enabled:
        add_periodic_job(app, "settlement-scheduled-close", settings.auto_close_interval_s, close_due_periods)
    add_openapi_route(app, "Settlement", description="Split rules, journal, statements, payouts, reconciliation")
    return app
