"""Bus entrypoints: thin handlers run inside the inbox transaction (all writes use the given session)."""
from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus import Bus, Envelope
from services.membership.handlers import MEMBERSHIP
from services.membership.usecases import Membership


def membership(app: web.Application) -> Membership:
    """The use cases; consumption starts a moment before they are built, so an early event is retried."""
    svc = app.get(MEMBERSHIP)
    if svc is None:
        raise RuntimeError("membership is still starting; the event will be retried")
    return svc


async def on_order_completed(app: web.Application, envelope: Envelope, session) -> None:
    """Earn points, count the purchase (tiers, analytics), wake a dormant member."""
    occurred_ms = int(envelope.occurred_at.timestamp() * 1000)
    await membership(app).on_order_completed(session, envelope.data, occurred_ms)


async def on_order_refunded(app: web.Application, envelope: Envelope, session) -> None:
    """Claw back earned points, return spent points and coupons."""
    await membership(app).on_order_refunded(session, envelope.data)


async def on_order_cancelled(app: web.Application, envelope: Envelope, session) -> None:
    """Safety net: release a checkout hold orders did not release itself."""
    await membership(app).on_order_cancelled(session, envelope.data)


def subscribe(app: web.Application, bus: Bus) -> None:
    bus.on("orders.order.completed", partial(on_order_completed, app))
    bus.on("orders.order.refunded", partial(on_order_refunded, app))
    bus.on("orders.order.cancelled", partial(on_order_cancelled, app))
