"""Bus entrypoints: thin handlers run inside the inbox transaction."""
from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus import Bus, Envelope
from libs.service import MONGO


async def on_order_placed(app: web.Application, envelope: Envelope, session) -> None:
    """Count units ordered per product (popularity for listing)."""
    for line in envelope.data.get("lines", []):
        await app[MONGO].db["sku_sales"].update_one({"_id": line["sku_id"]}, {"$inc": {"units": line["qty"]}},
                                                    upsert=True, session=session)


def subscribe(app: web.Application, bus: Bus) -> None:
    bus.on("orders.order.placed", partial(on_order_placed, app))
