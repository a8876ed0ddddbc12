from aiohttp import web

from libs.service import MONGO, OUTBOX, add_periodic_job, create_service_app
from services.orders.app_keys import ORDERS, PAYMENTS
from services.orders.consumers import subscribe
from services.orders.handlers import routes
from services.orders.jobs import sweep
from services.orders.payments.sandbox import SandboxProvider
from services.orders.repository import INDEXES
from services.orders.service import OrderService
from services.orders.settings import OrdersSettings
from services.orders.upstream import UPSTREAMS, Upstreams


def payment_provider(settings: OrdersSettings):
    if settings.payment_provider == "sandbox":
        return SandboxProvider(settings.payment_webhook_secret, settings.payment_fee_per_10000)
    raise ValueError(f"unknown payment provider {settings.payment_provider!r}")


def create_app(settings: OrdersSettings | None = None) -> web.Application:
    settings = settings or OrdersSettings()
    app = create_service_app(settings, indexes=INDEXES, routes=routes, subscribe=subscribe)
    app[PAYMENTS] = payment_provider(settings)

    async def order_service(app: web.Application):
        upstreams = Upstreams(settings)
        await upstreams.start()
        app[UPSTREAMS] = upstreams
        app[ORDERS] = OrderService(settings, app[MONGO], app[OUTBOX], upstreams, app[PAYMENTS])
        yield
        await app[ORDERS].drain()
        await upstreams.close()

    app.cleanup_ctx.append(order_service)
    add_periodic_job(app, "orders-sweeper", settings.sweep_interval_s, sweep)
    return app
