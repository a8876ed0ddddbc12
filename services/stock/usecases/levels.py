"""Levels and availability: what each location holds, and which stores near a shopper can serve a SKU now."""
from __future__ import annotations

from aiohttp import web

from libs.clock import now_ms
from libs.pagination import decode_cursor, page_of
from libs.principal import Principal
from services.stock.domain.routing import Point, distance_m, is_open, sellable, serves_mode
from services.stock.usecases.core import StockCore, level_view, may_write_at, site_of
from services.stock.usecases.locations import location_not_found

LEVELS_SCOPE = "stock.levels"


class Levels:
    def __init__(self, core: StockCore) -> None:
        self.core = core
        self.mongo = core.mongo

    async def page(self, principal: Principal, *, location_id: str | None, sku_id: str | None,
                   cursor: str | None, limit: int) -> dict:
        """Levels of the stores the caller may see (HQ: all)."""
        filters: dict = {"sku_id": sku_id} if sku_id else {}
        filters.update(await self.core.readable_filter(principal, location_id))
        docs = await self.core.levels.page(filters, decode_cursor(cursor, LEVELS_SCOPE), limit + 1)
        return page_of(docs, limit, scope=LEVELS_SCOPE, view=level_view)

    async def set_reorder_point(self, principal: Principal, location_id: str, sku_id: str,
                                reorder_point: int) -> dict:
        """`stock.level_low` fires when available drops under this point."""
        may_write_at(principal, location_id)
        levels = self.core.levels

        async def unit(session) -> dict:
            if await self.core.locations.get(location_id, session) is None:
                raise location_not_found()
            await levels.ensure(location_id, sku_id, session)
            await levels.set_reorder_point(location_id, sku_id, reorder_point, session)
            return await levels.get(location_id, sku_id, session)

        return level_view(await self.mongo.transaction(unit))


class Availability:
    """The nearest locations that can serve a SKU now in a mode: the same rules as routing at this moment
    (a warehouse ships but takes no pickup; a location whose ship capacity for today is used up is left out)."""

    def __init__(self, core: StockCore) -> None:
        self.core = core

    async def nearest(self, sku_id: str, here: Point, mode: str, limit: int) -> dict:
        core = self.core
        levels = {doc["location_id"]: doc for doc in await core.levels.for_skus([sku_id], in_stock_only=True)}
        locations = await core.locations.by_ids(sorted(levels))
        at = now_ms()
        local = core.local_time(at)
        local_minutes = local.hour * 60 + local.minute
        capacity_used = await core.capacity.used_on(core.capacity_day(at)) if mode == "ship" else {}
        items = []
        for doc in locations:
            site = site_of(doc)
            if site.id not in levels or not serves_mode(site, mode):
                continue
            capacity_left = max(0, site.daily_capacity - capacity_used.get(site.id, 0)) if mode == "ship" else None
            if capacity_left == 0:
                continue  # routing would not send a ship order there today
            can_take = sellable(site, levels[site.id]["available"], mode)
            if can_take <= 0:
                continue
            items.append({"location_id": site.id, "name": doc["name"], "kind": site.kind,
                          "distance_m": distance_m(here, Point(site.lat, site.lng)),
                          "available": can_take, "pickup": site.pickup, "ship": site.ship,
                          "ship_capacity_left": capacity_left,
                          "opening_hours": doc.get("opening_hours", ""),
                          "open_now": is_open(doc.get("opening_hours", ""), local_minutes)})
        items.sort(key=lambda item: (item["distance_m"], item["location_id"]))
        return {"sku_id": sku_id, "mode": mode, "items": items[:limit]}


LEVELS = web.AppKey("levels", Levels)
AVAILABILITY = web.AppKey("availability", Availability)
