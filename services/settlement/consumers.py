"""Bus entrypoints: thin handlers run inside the inbox transaction (all writes use its session)."""
from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus import Bus, Envelope
from services.settlement.ledger import (ORDER_COMPLETED, ORDER_CONFIRMED, ORDER_REFUNDED, RETURN_RECEIVED,
                                        Ledger)


async def on_order_confirmed(app: web.Application, envelope: Envelope, session) -> None:
    """Paid: record the captured payment for reconciliation and hold the money as deferred revenue."""
    ledger = Ledger(app)
    await ledger.record_capture(session, await ledger.order_facts(envelope, session), envelope)


async def on_order_completed(app: web.Application, envelope: Envelope, session) -> None:
    """Completed: post the sale split. The capture is posted too if its own event has not arrived (in-store
    sales complete right after payment); its key makes the later confirmed event post nothing."""
    ledger = Ledger(app)
    order = await ledger.order_facts(envelope, session)
    await ledger.record_capture(session, order, envelope)
    await ledger.record_sale(session, order, envelope)


async def on_order_refunded(app: web.Application, envelope: Envelope, session) -> None:
    await Ledger(app).record_refund(session, envelope)


async def on_return_received(app: web.Application, envelope: Envelope, session) -> None:
    """For information only: the money side follows with orders.order.refunded."""
    await Ledger(app).record_return(session, envelope)


def subscribe(app: web.Application, bus: Bus) -> None:
    bus.on(ORDER_CONFIRMED, partial(on_order_confirmed, app))
    bus.on(ORDER_COMPLETED, partial(on_order_completed, app))
    bus.on(ORDER_REFUNDED, partial(on_order_refunded, app))
    bus.on(RETURN_RECEIVED, partial(on_return_received, app))
