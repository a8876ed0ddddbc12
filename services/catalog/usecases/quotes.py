"""Quotes: what SKUs sell at on a channel right now (orders asks before it takes an order)."""
from __future__ import annotations

from aiohttp import web

from libs.clock import rfc3339, utcnow
from libs.mongo import Mongo
from libs.outbox import Outbox
from services.catalog import metrics
from services.catalog.domain import model
from services.catalog.domain.model import CatalogError
from services.catalog.repository import ProductRepository
from services.catalog.settings import CatalogSettings
from services.catalog.usecases.base import UseCase
from services.catalog.usecases.prices import Prices
from services.catalog.views import quote_item


class Quotes(UseCase):
    def __init__(self, mongo: Mongo, outbox: Outbox, settings: CatalogSettings, *, prices: Prices) -> None:
        super().__init__(mongo, outbox, settings)
        self.products = ProductRepository(mongo)
        self.prices = prices

    async def quote(self, channel: str, sku_ids: list[str]) -> dict:
        """One item per SKU asked (in the order asked); any unknown or unsellable SKU refuses the whole quote."""
        wanted = list(dict.fromkeys(sku_ids))
        skus = {s["_id"]: s for s in await self.products.skus_by_id(wanted)}
        products = {p["_id"]: p for p in await self.products.many(sorted({s["product_id"] for s in skus.values()}))}
        not_sellable = [sku_id for sku_id in wanted if sku_id not in skus
                        or not model.is_sellable(products.get(skus[sku_id]["product_id"], {}).get("status", ""))]
        if not_sellable:
            metrics.QUOTES.labels("not_sellable").inc()
            raise CatalogError("sku-not-sellable", f"not sellable (unknown or not active): {', '.join(not_sellable)}",
                               sku_ids=not_sellable)
        prices = await self.prices.in_force(list(skus.values()))
        metrics.QUOTES.labels("ok").inc()
        return {"channel": channel, "quoted_at": rfc3339(utcnow()),
                "items": [quote_item(skus[s], products[skus[s]["product_id"]], prices[s], channel) for s in sku_ids]}


QUOTES = web.AppKey("quotes", Quotes)
