"""Prices: change a SKU's price now or at a set time, apply due changes, and tell the price in force."""
from __future__ import annotations

from typing import NamedTuple

from aiohttp import web

from libs.clock import from_ms, now_ms
from libs.logging import get_logger
from libs.mongo import Mongo
from libs.outbox import Outbox
from libs.refusal import CONFLICT
from services.catalog import metrics
from services.catalog.domain import model
from services.catalog.domain.model import CatalogError
from services.catalog.events import PriceChanged
from services.catalog.repository import PriceHistoryRepository, ProductRepository, ScheduleRepository
from services.catalog.settings import CatalogSettings
from services.catalog.usecases.base import UseCase
from services.catalog.views import history_view, price_view, schedule_view, sku_view

log = get_logger("catalog.prices")


class PriceChangeAnswer(NamedTuple):
    scheduled: bool  # True: it waits for its time (`view` is the schedule); False: applied now (`view` is the SKU)
    view: dict


class Prices(UseCase):
    def __init__(self, mongo: Mongo, outbox: Outbox, settings: CatalogSettings) -> None:
        super().__init__(mongo, outbox, settings)
        self.schedules = ScheduleRepository(mongo)
        self.history = PriceHistoryRepository(mongo)
        self.products = ProductRepository(mongo)

    # -- reads ------------------------------------------------------------------------------------
    async def in_force(self, skus: list[dict]) -> dict[str, dict]:
        """The price in force now per SKU, honouring scheduled changes already due (before the job writes them)."""
        if not skus:
            return {}
        at_ms = now_ms()
        by_sku: dict[str, list[dict]] = {}
        for schedule in await self.schedules.pending_for([s["_id"] for s in skus]):
            by_sku.setdefault(schedule["sku_id"], []).append(schedule)
        return {s["_id"]: model.price_in_force(s["price"], by_sku.get(s["_id"], []), at_ms, self.band) for s in skus}

    async def overview(self, sku_id: str) -> dict:
        """HQ: the price in force, the scheduled changes and the history of one SKU."""
        sku = await self._sku(sku_id)
        current = (await self.in_force([sku]))[sku_id]
        return {"sku_id": sku_id, "current": price_view(current),
                "scheduled": [schedule_view(s) for s in await self.schedules.of_sku(sku_id)],
                "history": [history_view(h) for h in await self.history.of_sku(sku_id)]}

    # -- writes -----------------------------------------------------------------------------------
    async def change(self, sku_id: str, change: dict, effective_at_ms: int | None, actor: str) -> PriceChangeAnswer:
        """Apply a price change now, or schedule it when `effective_at_ms` is in the future."""
        async def unit(session) -> PriceChangeAnswer:
            sku = await self._sku(sku_id, session)
            if effective_at_ms is not None and effective_at_ms > now_ms():
                return PriceChangeAnswer(True, schedule_view(await self._schedule(sku, change, effective_at_ms,
                                                                                  actor, session)))
            sku = await self._apply(sku, change, now_ms(), actor, None, session)
            self.mongo.after_commit(metrics.PRICE_CHANGES.labels("immediate").inc)
            return PriceChangeAnswer(False, sku_view(sku, internal=True))

        return await self.unit_of_work(unit)

    async def cancel_schedule(self, schedule_id: str) -> dict:
        """Cancel a scheduled change that is not yet due; cancelling it again changes nothing."""
        async def unit(session) -> dict:
            schedule = await self.schedules.get(schedule_id, session)
            if schedule is None:
                raise model.missing(f"price schedule {schedule_id}")
            if schedule["status"] == "cancelled":
                return schedule
            if schedule["status"] != "pending" or schedule["effective_at_ms"] <= now_ms():
                raise CatalogError("schedule-settled", f"the change is already {schedule['status']} or due",
                                   kind=CONFLICT)
            return await self.schedules.save({**schedule, "status": "cancelled", "settled_at_ms": now_ms()},
                                                   session)

        return schedule_view(await self.unit_of_work(unit))

    async def apply_due_changes(self) -> int:
        """Apply the scheduled changes whose time has come, in effective order, each in its own unit of work."""
        applied = 0
        for due in await self.mongo.read_committed(lambda: self.schedules.due(now_ms())):
            status = await self.unit_of_work(lambda session, sid=due["_id"]: self._apply_schedule(sid, session))
            if status == "applied":
                applied += 1
                metrics.PRICE_CHANGES.labels("scheduled").inc()
            elif status == "rejected":
                metrics.PRICE_REJECTIONS.labels("scheduled-out-of-band").inc()
                log.warning("catalog.scheduled_price_rejected", schedule_id=due["_id"], sku_id=due["sku_id"])
        return applied

    # -- inside a unit of work --------------------------------------------------------------------
    async def _sku(self, sku_id: str, session=None) -> dict:
        sku = await self.products.sku(sku_id, session)
        if sku is None:
            raise model.missing(f"SKU {sku_id}")
        return sku

    async def _schedule(self, sku: dict, change: dict, effective_at_ms: int, actor: str, session) -> dict:
        # Checked now against the price it will meet then: the current price plus the changes due before it.
        earlier = [s for s in await self.schedules.pending_for([sku["_id"]], session)
                   if s["effective_at_ms"] <= effective_at_ms]
        model.apply_price_change(model.price_in_force(sku["price"], earlier, effective_at_ms, self.band), change,
                                 self.band)
        schedule = model.new_schedule(sku, change, effective_at_ms, actor)
        await self.schedules.add(schedule, session)
        return schedule

    async def _apply_schedule(self, schedule_id: str, session) -> str:
        """Apply one due scheduled change. Returns its final status."""
        schedule = await self.schedules.get(schedule_id, session)
        if schedule is None or schedule["status"] != "pending" or schedule["effective_at_ms"] > now_ms():
            return schedule["status"] if schedule else "missing"
        sku = await self._sku(schedule["sku_id"], session)
        try:
            await self._apply(sku, schedule["change"], schedule["effective_at_ms"], schedule["actor"],
                              schedule["_id"], session)
            schedule["status"] = "applied"
        except CatalogError as refusal:
            # The base moved since it was scheduled and this change would now be out of band.
            schedule["status"] = "rejected"
            schedule["rejected_because"] = refusal.detail
        schedule["settled_at_ms"] = now_ms()
        await self.schedules.save(schedule, session)
        return schedule["status"]

    async def _apply(self, sku: dict, change: dict, effective_at_ms: int, actor: str, schedule_id: str | None,
                     session) -> dict:
        """The new price saved, recorded in the history and published, in the caller's unit of work."""
        before = sku["price"]
        after = model.apply_price_change(before, change, self.band)
        sku = await self.products.save_sku({**sku, "price": after}, session)
        how = "scheduled" if schedule_id else "immediate"
        await self.history.record(model.history_entry(sku, before, after, effective_at_ms, actor, how, schedule_id),
                                 session)
        await self.outbox.record(session, PriceChanged(
            sku_id=sku["_id"], product_id=sku["product_id"], base=after["base"], channels=after.get("channels", {}),
            previous_base=before["base"], previous_channels=before.get("channels", {}),
            effective_at=from_ms(effective_at_ms), schedule_id=schedule_id), subject=sku["_id"])
        return sku


PRICES = web.AppKey("prices", Prices)
