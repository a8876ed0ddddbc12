from aiohttp import web

from libs.openapi import add_openapi_route
from libs.service import MONGO, OUTBOX, add_periodic_job, create_service_app
from services.stock.consumers import subscribe
from services.stock.demo import load_demo_data
from services.stock.handlers import routes
from services.stock.jobs import reconcile_reservations, release_expired_reservations
from services.stock.repository import EMBEDDED_OUTBOX, INDEXES
from services.stock.settings import StockSettings
from services.stock.usecases import (APPROVALS, AVAILABILITY, LEVELS, LOCATIONS, MOVEMENTS, RECONCILIATION,
                                     RESERVATIONS, Approvals, Availability, Levels, Locations, Movements, Reconciliation, Reservations,
                                     StockCore)


def create_app(settings: StockSettings | None = None) -> web.Application:
    settings = settings or StockSettings()
    app = create_service_app(settings, indexes=INDEXES, routes=routes, subscribe=subscribe)

    async def use_cases(app: web.Application):
        # One core for all: reservations and movements share the ledger order and the sold-out memo.
        # The fast path writes reservations, rejections and level edges with their events inside them.
        app[OUTBOX].embed_in(*EMBEDDED_OUTBOX)
        core = StockCore(app[MONGO], app[OUTBOX], settings)
        app[LOCATIONS] = Locations(core)
        app[LEVELS] = Levels(core)
        app[AVAILABILITY] = Availability(core)
        app[MOVEMENTS] = Movements(core)
        app[APPROVALS] = Approvals(core, app[MOVEMENTS])
        app[RESERVATIONS] = Reservations(core)
        app[RECONCILIATION] = Reconciliation(core)
        if settings.demo_data:
            await load_demo_data(app[LOCATIONS])
        yield

    app.cleanup_ctx.append(use_cases)
    add_openapi_route(app, "Stock")
    add_periodic_job(app, "stock-reservation-sweeper", settings.sweeper_interval_s, release_expired_reservations)
    add_periodic_job(app, "stock-reservation-reconciliation", settings.reconcile_interval_s, reconcile_reservations)
    return app
