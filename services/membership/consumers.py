"""Bus entrypoints: thin. They run inside the inbox's unit of work, which the use cases' own units join."""
from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus import Bus, Envelope
from libs.clock import to_ms
from services.membership.usecases import PURCHASES, Purchases


def purchases(app: web.Application) -> Purchases:
    """The use cases; consumption starts a moment before they are built, so an early event is retried."""
    flow = app.get(PURCHASES)
    if flow is None:
        raise RuntimeError("membership is still starting; the event will be retried")
    return flow


async def on_order_completed(app: web.Application, envelope: Envelope, _session) -> None:
    """Earn points, count the purchase (tiers, analytics), wake a dormant member."""
    await purchases(app).completed(envelope.data, to_ms(envelope.occurred_at))


async def on_order_refunded(app: web.Application, envelope: Envelope, _session) -> None:
    """Claw back earned points, return spent points and coupons."""
    await purchases(app).refunded(envelope.data)


async def on_order_cancelled(app: web.Application, envelope: Envelope, _session) -> None:
    """Safety net: release a checkout hold orders did not release itself."""
    await purchases(app).cancelled(envelope.data)


async def on_order_rejected(app: web.Application, envelope: Envelope, _session) -> None:
    """A checkout that failed: its hold is released, and the release stays (a hold arriving later is refused)."""
    await purchases(app).cancelled(envelope.data)


def subscribe(app: web.Application, bus: Bus) -> None:
    bus.on("orders.order.completed", partial(on_order_completed, app))
    bus.on("orders.order.refunded", partial(on_order_refunded, app))
    bus.on("orders.order.cancelled", partial(on_order_cancelled, app))
    bus.on("orders.order.rejected", partial(on_order_rejected, app))
