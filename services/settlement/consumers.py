"""Bus entrypoints: thin. They run inside the inbox transaction; the journal's unit of work joins it, so the
`session` the bus passes is not needed here."""
from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus import Bus, Envelope
from services.settlement.usecases import JOURNAL
from services.settlement.usecases.journal import ORDER_COMPLETED, ORDER_CONFIRMED, ORDER_REFUNDED, RETURN_RECEIVED


async def on_order_confirmed(app: web.Application, envelope: Envelope, _session) -> None:
    await app[JOURNAL].order_confirmed(envelope)


async def on_order_completed(app: web.Application, envelope: Envelope, _session) -> None:
    await app[JOURNAL].order_completed(envelope)


async def on_order_refunded(app: web.Application, envelope: Envelope, _session) -> None:
    await app[JOURNAL].order_refunded(envelope)


async def on_return_received(app: web.Application, envelope: Envelope, _session) -> None:
    await app[JOURNAL].return_received(envelope)


def subscribe(app: web.Application, bus: Bus) -> None:
    bus.on(ORDER_CONFIRMED, partial(on_order_confirmed, app))
    bus.on(ORDER_COMPLETED, partial(on_order_completed, app))
    bus.on(ORDER_REFUNDED, partial(on_order_refunded, app))
    bus.on(RETURN_RECEIVED, partial(on_return_received, app))
