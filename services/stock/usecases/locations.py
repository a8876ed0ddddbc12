"""Locations: the stores and warehouses of the network (HQ opens and changes them; anyone reads them)."""
from __future__ import annotations

from aiohttp import web

from libs.ids import new_id
from libs.logging import get_logger
from libs.mongo import refuse_duplicates
from libs.pagination import decode_cursor, page_of
from libs.refusal import NOT_FOUND, Refusal
from services.stock.domain.model import StockError
from services.stock.usecases.core import StockCore, location_view

LOCATIONS_SCOPE = "stock.locations"
log = get_logger("stock.locations")


def location_not_found() -> Refusal:
    return Refusal("not-found", "location not found", kind=NOT_FOUND)


class Locations:
    def __init__(self, core: StockCore) -> None:
        self.core = core
        self.mongo = core.mongo

    async def get(self, location_id: str) -> dict:
        doc = await self.core.locations.get(location_id)
        if doc is None:
            raise location_not_found()
        return location_view(doc)

    async def page(self, *, kind: str | None, cursor: str | None, limit: int) -> dict:
        docs = await self.core.locations.page(decode_cursor(cursor, LOCATIONS_SCOPE), limit + 1, kind)
        return page_of(docs, limit, scope=LOCATIONS_SCOPE, view=location_view)

    async def open(self, fields: dict, location_id: str | None = None) -> dict:
        """A new location, active at once; an id already taken is refused as `location-exists`."""
        doc = {"_id": location_id or new_id("loc"), **fields, "active": True}
        exists = StockError("location-exists", f"location {doc['_id']} already exists")

        async def unit(session) -> None:
            if await self.core.locations.get(doc["_id"], session) is not None:
                raise exists
            with refuse_duplicates(exists.code, exists.detail):
                await self.core.locations.add(doc, session)

        await self.mongo.transaction(unit)
        return location_view(doc)

    async def change(self, location_id: str, changes: dict) -> dict:
        async def unit(session) -> dict:
            doc = await self.core.locations.get(location_id, session)
            if doc is None:
                raise location_not_found()
            doc.update(changes)
            return await self.core.locations.save(doc, session)

        return location_view(await self.mongo.transaction(unit))

    async def load_demo(self, locations: list[dict], levels: list[dict]) -> None:
        """Demo data, loaded once: what exists (changed by an admin, moved by real stock) is left as it is."""
        core = self.core

        async def unit(session) -> None:
            for doc in locations:
                await core.locations.add_if_missing(doc, session)
            for row in levels:
                await core.levels.upsert_demo(row["location_id"], row["sku_id"], row["on_hand"],
                                              row.get("reorder_point", core.settings.default_reorder_point), session)

        await self.mongo.transaction(unit)
        log.info("stock.demo_loaded", locations=len(locations), levels=len(levels))


LOCATIONS = web.AppKey("locations", Locations)
