"""The catalog application: the kit's service app, its use cases built once, the demo data, the price job."""
from aiohttp import web

from libs.openapi import add_openapi_route
from libs.service import MONGO, OUTBOX, add_periodic_job, create_service_app
from services.catalog.consumers import subscribe
from services.catalog.demo import load_demo_data
from services.catalog.handlers import routes
from services.catalog.jobs import apply_due_price_changes
from services.catalog.repository import INDEXES
from services.catalog.settings import CatalogSettings
from services.catalog.usecases import (CATEGORIES, PRICES, PRODUCTS, QUOTES, SALES, Categories, Prices, Products,
                                       Quotes, Sales)


def create_app(settings: CatalogSettings | None = None) -> web.Application:
    settings = settings or CatalogSettings()
    app = create_service_app(settings, indexes=INDEXES, routes=routes, subscribe=subscribe)

    async def use_cases(app: web.Application):
        mongo, outbox = app[MONGO], app[OUTBOX]
        app[PRICES] = prices = Prices(mongo, outbox, settings)
        app[PRODUCTS] = Products(mongo, outbox, settings, prices=prices)
        app[CATEGORIES] = Categories(mongo, outbox, settings)
        app[QUOTES] = Quotes(mongo, outbox, settings, prices=prices)
        app[SALES] = Sales(mongo, outbox, settings)
        if settings.demo_data:
            await load_demo_data(app[CATEGORIES], app[PRODUCTS])
        yield

    app.cleanup_ctx.append(use_cases)
    add_openapi_route(app, "Catalog")
    add_periodic_job(app, "catalog-price-scheduler", settings.price_scheduler_interval_s, apply_due_price_changes)
    return app
