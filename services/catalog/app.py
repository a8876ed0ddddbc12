from aiohttp import web

from libs.service import create_service_app
from services.catalog.consumers import subscribe
from services.catalog.handlers import routes
from services.catalog.repository import INDEXES
from services.catalog.settings import CatalogSettings


def create_app(settings: CatalogSettings | None = None) -> web.Application:
    settings = settings or CatalogSettings()
    return create_service_app(settings, indexes=INDEXES, routes=routes, subscribe=subscribe)
