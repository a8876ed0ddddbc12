"""The orders application: the kit's service app, the adapters (siblings, payment provider), the use cases
built once, the OpenAPI document and the sweeper."""
from aiohttp import web

from libs.openapi import add_openapi_route
from libs.service import MONGO, OUTBOX, add_periodic_job, create_service_app
from services.orders.consumers import subscribe
from services.orders.handlers import routes
from services.orders.jobs import sweep
from services.orders.payments.sandbox import SandboxProvider
from services.orders.repository import INDEXES
from services.orders.settings import OrdersSettings
from services.orders.upstream import UPSTREAMS, Upstreams
from services.orders.usecases import (CHECKOUT, EXPIRY, FOLLOW_UPS, FULFILMENT, ORDERS, PAYMENT_PROVIDER, PAYMENTS,
                                      RETURNS, Checkout, Expiry, FollowUps, Fulfilment, Orders, Payments, Returns)


def payment_provider(settings: OrdersSettings):
    if settings.payment_provider == "sandbox":
        return SandboxProvider(settings.payment_webhook_secret, settings.payment_fee_per_10000)
    raise ValueError(f"unknown payment provider {settings.payment_provider!r}")


def create_app(settings: OrdersSettings | None = None) -> web.Application:
    settings = settings or OrdersSettings()
    app = create_service_app(settings, indexes=INDEXES, routes=routes, subscribe=subscribe)
    app[PAYMENT_PROVIDER] = payment_provider(settings)

    async def use_cases(app: web.Application):
        upstreams = Upstreams(settings)
        await upstreams.start()
        app[UPSTREAMS] = upstreams
        provider = app[PAYMENT_PROVIDER]
        if hasattr(provider, "remember_in"):  # the sandbox's provider side keeps its charges in its own database
            provider.remember_in(app[MONGO].client[f"{settings.mongo_db_prefix}payments_sandbox"]["charges"])
        app[OUTBOX].embed_in("orders")  # every order event travels inside its order (outbox in the aggregate)
        adapters = (settings, app[MONGO], app[OUTBOX], upstreams, provider)
        app[FOLLOW_UPS] = followups = FollowUps(*adapters)
        app[ORDERS] = Orders(*adapters, followups)
        app[CHECKOUT] = Checkout(*adapters, followups)
        app[PAYMENTS] = payments = Payments(*adapters, followups)
        app[FULFILMENT] = Fulfilment(*adapters, followups)
        app[RETURNS] = Returns(*adapters, followups)
        app[EXPIRY] = Expiry(*adapters, followups, payments_flow=payments)
        yield
        await followups.drain()
        await upstreams.close()

    app.cleanup_ctx.append(use_cases)
    add_openapi_route(app, "Orders")
    add_periodic_job(app, "orders-sweeper", settings.sweep_interval_s, sweep)
    return app
