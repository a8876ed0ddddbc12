"""Bus entrypoints of catalog: each calls one use case (it joins the bus's inbox transaction)."""
from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus import Bus, Envelope
from services.catalog.usecases import SALES


async def on_order_placed(app: web.Application, envelope: Envelope, _session) -> None:
    """Count units ordered per SKU (popularity for listing)."""
    await app[SALES].count_order(envelope.data.get("lines", []))


def subscribe(app: web.Application, bus: Bus) -> None:
    bus.on("orders.order.placed", partial(on_order_placed, app))
