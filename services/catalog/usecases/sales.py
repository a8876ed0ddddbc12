"""Sales: units ordered per SKU, the popularity that listings can sort by."""
from __future__ import annotations

from aiohttp import web

from libs.mongo import Mongo
from libs.outbox import Outbox
from services.catalog.repository import SalesRepository
from services.catalog.settings import CatalogSettings
from services.catalog.usecases.base import UseCase


class Sales(UseCase):
    def __init__(self, mongo: Mongo, outbox: Outbox, settings: CatalogSettings) -> None:
        super().__init__(mongo, outbox, settings)
        self.sales = SalesRepository(mongo)

    async def count_order(self, lines: list[dict]) -> None:
        """Add an order's units to each SKU's count (once per order: the bus's inbox drops redeliveries)."""
        async def unit(session) -> None:
            for line in lines:
                await self.sales.add_units(line["sku_id"], line["qty"], session)

        await self.unit_of_work(unit)


SALES = web.AppKey("sales", Sales)
