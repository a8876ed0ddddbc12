"""Bus entrypoints of stock: thin; they call the same use cases as HTTP, inside the inbox's unit of work."""
from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus import Bus, Envelope
from libs.logging import get_logger
from libs.refusal import Refusal
from services.stock.usecases import RESERVATIONS

log = get_logger("stock")


async def on_order_cancelled(app: web.Application, envelope: Envelope, _session) -> None:
    """Safety net: release the order's held stock if orders could not release it synchronously."""
    await app[RESERVATIONS].release_for_cancelled_order(envelope.data.get("order_id") or envelope.subject)


async def on_order_confirmed(app: web.Application, envelope: Envelope, _session) -> None:
    """Paid: the goods stay held until they leave (shipped or picked up). Orders no longer asks for this
    synchronously after the payment; an in-store sale commits at once instead."""
    if (envelope.data.get("fulfilment") or {}).get("type") == "in_store":
        return
    reservations = app[RESERVATIONS]
    order_id = envelope.data.get("order_id") or envelope.subject
    try:
        await reservations.extend(order_id, reservations.settings.paid_reservation_ttl_s)
    except Refusal as refusal:  # no longer held (committed, released) or never made: nothing to hold longer
        log.info("stock.paid_extend_skipped", order_id=order_id, code=refusal.code)


def subscribe(app: web.Application, bus: Bus) -> None:
    bus.on("orders.order.cancelled", partial(on_order_cancelled, app))
    # A checkout that failed: the same release, and the same tombstone against a reservation arriving late.
    bus.on("orders.order.rejected", partial(on_order_cancelled, app))
    bus.on("orders.order.confirmed", partial(on_order_confirmed, app))
