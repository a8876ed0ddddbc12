"""The fast path of a reservation: decided by one atomic guarded `$inc` per line on the small level document,
written without a multi-document transaction.

    take each line:   {"_id": level, "available": {"$gte": q + safety}} -> {"$inc": {"available": -q, "reserved": q}}
    then insert the reservation with its `stock.reserved` event in the same document (outbox in the aggregate,
    group commit: concurrent reservations share one `insert_many`).

Idempotent by order id: the unique `order_id` index decides between two requests of one order (or a release
that left a tombstone first); the loser gives back what it took (compensation) and answers what is stored.
A later line that cannot be taken gives back the earlier ones, so nothing stays held. A crash between the
take and the insert leaves units reserved with no reservation: the reconciliation job finds and repairs them
(it leaves alone a level taken in the last `STOCK_RECONCILE_GRACE_S`, whose reservation may be on its way).

Used where the order is served by ONE location: a named store (pickup, in_store), or a ship order the routing
sends to one location (its daily capacity is one more guarded `$inc`). Splits, and a request already inside
a unit of work (an `Idempotency-Key` answer being stored), take the transactional path.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pymongo.errors import DuplicateKeyError

from libs.clock import from_ms, now_ms
from libs.ids import new_id
from services.stock import metrics
from services.stock.domain import model
from services.stock.domain.model import FRESH, UNKNOWN, SoldOutMemo
from services.stock.domain.routing import Decision, Line, merge_lines, route, sellable, serves_mode
from services.stock.events import AllocatedLine, NearbyStore, ReservationRejected, StockLevelLow, StockReserved
from services.stock.repository import level_id
from services.stock.usecases.core import StockCore, allocation_data, contention, site_of

TRANSACTIONAL = None  # "take the transactional path"


class SoldOutGate:
    """Refusal from memory with single-flight: while a key's entry is fresh, refuse at once; when it has
    expired (or a miss is being explained), ONE request reads the database and the others wait for its
    answer. Errors never refuse (a failed refresh lets the requests through to the guarded update)."""

    def __init__(self, memo: SoldOutMemo) -> None:
        self.memo = memo
        self._flights: dict[tuple, asyncio.Future] = {}

    async def sold_out(self, key: tuple, refresh: Callable[[], Awaitable[bool]]) -> bool:
        state = self.memo.state(key)
        if state == FRESH:
            return True
        if state == UNKNOWN and key not in self._flights:
            return False
        return await self.refresh(key, refresh)

    async def refresh(self, key: tuple, refresh: Callable[[], Awaitable[bool]]) -> bool:
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = self._flights[key] = asyncio.get_running_loop().create_future()
        try:
            answer = bool(await refresh())
        except Exception:  # noqa: BLE001 - a failed refresh never refuses
            answer = False
        finally:
            self._flights.pop(key, None)
        flight.set_result(answer)
        return answer


@dataclass
class Taken:
    """What one fast attempt holds so far (to give back if a later step fails)."""
    lines: list[tuple[str, str, int]] = field(default_factory=list)  # (location, sku, qty)
    capacity: tuple[str, str] | None = None  # (location, day)
    levels: list[dict] = field(default_factory=list)  # each level after its take


class FastReservations:
    """The single-location reservation without a transaction (see the module docstring)."""

    def __init__(self, core: StockCore, route_now, exhausted) -> None:
        self.core = core
        self.mongo = core.mongo
        self.settings = core.settings
        self.gate = SoldOutGate(core.sold_out)
        self._route_now = route_now  # Reservations._route_now: the routing read (session None: no transaction)
        self._exhausted = exhausted

    async def reserve(self, request: dict, wanted: str, answer_existing) -> tuple[dict, bool] | Decision | None:
        """(reservation, created), the rejecting Decision, or None when the transactional path must decide."""
        core, mode = self.core, request["mode"]
        existing = await self.mongo.read_committed(lambda: core.reservations.by_order(request["order_id"]))
        if existing is not None:
            return answer_existing(existing, wanted), False
        lines = merge_lines([Line(line["sku_id"], line["qty"]) for line in request["lines"]])
        location = request.get("location_id") if mode != "ship" else None
        for line in lines:
            key = (line.sku_id, mode, location)
            if await self.gate.sold_out(key, lambda sku=line.sku_id: self._still_sold_out(request, sku)):
                metrics.RESERVE_PATH.labels("memo").inc()
                return await self.reject(request, Decision(mode, [], [], "rejected", reason="sold-out",
                                                           nearest=core.sold_out.nearest(key)))
        for _ in range(max(1, self.settings.fast_path_attempts)):
            outcome = await self._attempt(request, lines, wanted, answer_existing)
            if outcome != "retry":
                return outcome
        return TRANSACTIONAL

    async def _attempt(self, request: dict, lines: list[Line], wanted: str, answer_existing):
        core, mode = self.core, request["mode"]
        if mode == "ship":
            decision, by_id, levels_by_key, day, at = await self._route_now(request, None)
            if not decision.accepted:
                return await self._refuse_routed(request, decision, by_id, levels_by_key)
            if len(decision.allocations) != 1:
                return TRANSACTIONAL  # a split: several locations move together in one transaction
            site_doc = by_id[decision.allocations[0].location_id]
        else:
            site_doc = await self.mongo.read_committed(lambda: core.locations.get(request["location_id"]))
            if site_doc is None or not serves_mode(site_of(site_doc), mode):
                return TRANSACTIONAL  # the transactional path explains the refusal in full
            decision, day, at = None, None, now_ms()
        taken = await self._take(site_doc, lines, mode, day, at)
        if taken is None:
            return await self._explain_miss(request)
        if decision is None:
            stock = {(site_doc["_id"], lvl["sku_id"]): lvl["available"] + qty
                     for lvl, (_, _, qty) in zip(taken.levels, taken.lines)}
            decision = route(mode, lines, [site_of(site_doc)], stock, location_id=site_doc["_id"])
        if now_ms() - at > self.settings.reconcile_grace_s * 500:
            await self._give_back(taken)  # too slow: the reconciliation could mistake this hold for drift
            raise contention()
        doc = self._reservation(request, site_doc, lines, decision, wanted, day, at)
        try:
            await core.outbox.insert("reservations", doc, [(StockReserved(
                reservation_id=doc["_id"], order_id=doc["order_id"], mode=mode,
                allocations=allocation_data(doc["allocations"]), expires_at=from_ms(doc["expires_at_ms"])),
                doc["order_id"])])
        except DuplicateKeyError:  # the same order (or its tombstone) was stored first: answer that
            await self._give_back(taken)
            existing = await self.mongo.read_committed(lambda: core.reservations.by_order(request["order_id"]))
            if existing is None:
                return "retry"
            return answer_existing(existing, wanted), False
        await self._after_take(taken)
        metrics.RESERVE_PATH.labels("fast").inc()
        doc["version"] = 1
        return doc, True

    async def _take(self, site_doc: dict, lines: list[Line], mode: str, day: str | None, at: int) -> Taken | None:
        """Take every line at one location (and its ship capacity); on any miss give back what was taken."""
        core, taken = self.core, Taken()
        held_back = 0 if mode == "in_store" else site_doc.get("safety_stock", 0)
        for line in lines:
            level = await core.levels.take(site_doc["_id"], line.sku_id, line.qty, held_back, at)
            if level is None:
                await self._give_back(taken)
                return None
            taken.lines.append((site_doc["_id"], line.sku_id, line.qty))
            taken.levels.append(level)
        if mode == "ship":
            if not await self.mongo.read_committed(lambda: core.capacity.take(
                    site_doc["_id"], day, site_doc.get("daily_capacity", 0), None)):
                await self._give_back(taken)
                return None
            taken.capacity = (site_doc["_id"], day)
        return taken

    async def _give_back(self, taken: Taken) -> None:
        core, at = self.core, now_ms()
        for location_id, sku_id, qty in reversed(taken.lines):
            level = await core.levels.give(location_id, sku_id, qty, at)
            core.stock_given_back(sku_id)
            if level is not None:
                await core.note_available(location_id, sku_id, level["available"], falling=False,
                                          flagged=bool(level.get("sold_out")))
        if taken.capacity is not None:
            location_id, day = taken.capacity
            await self.mongo.read_committed(lambda: core.capacity.give_back(location_id, day, None))
        taken.lines, taken.levels, taken.capacity = [], [], None

    async def _after_take(self, taken: Taken) -> None:
        """The edges the takes crossed: sold out at 0, under the reorder point (exactly once: the level after
        an atomic take says what it was before)."""
        core = self.core
        for level, (location_id, sku_id, qty) in zip(taken.levels, taken.lines):
            after = level["available"]
            await core.note_available(location_id, sku_id, after, falling=True, flagged=bool(level.get("sold_out")))
            reorder_point = level.get("reorder_point", self.settings.default_reorder_point)
            if model.crossed_below(after + qty, after, reorder_point):
                await core.outbox.update("levels", {"_id": level["_id"]}, {}, [(StockLevelLow(
                    location_id=location_id, sku_id=sku_id, available=after, on_hand=level["on_hand"],
                    reorder_point=reorder_point), level["_id"])])
                metrics.LEVEL_LOW.inc()

    async def _explain_miss(self, request: dict):
        """A take missed: read the picture (no transaction) and refuse when it truly cannot be served; when
        it could (stock came back meanwhile), try again. Concurrent misses on one key share one read."""
        mode = request["mode"]
        location = request.get("location_id") if mode != "ship" else None
        key = (request["lines"][0]["sku_id"], mode, location)
        mine: dict = {}

        async def explain() -> bool:
            sku_ids = sorted({line["sku_id"] for line in request["lines"]})
            generation = {sku: self.core.sold_out.generation(sku) for sku in sku_ids}
            mine["routed"] = routed = await self._route_now(request, None)
            decision, by_id, levels_by_key = routed[0], routed[1], routed[2]
            if decision.accepted:
                return False
            exhausted = self._exhausted_for(request, sku_ids, by_id, levels_by_key)
            self.core.sold_out.mark(exhausted, mode, location, nearest=decision.nearest, generation=generation)
            return key[0] in exhausted and self.core.sold_out.state(key) == FRESH

        sold_out = await self.gate.refresh(key, explain)
        if "routed" not in mine:  # another request read for us
            if sold_out:
                metrics.RESERVE_PATH.labels("memo").inc()
                return await self.reject(request, Decision(mode, [], [], "rejected", reason="sold-out",
                                                           nearest=self.core.sold_out.nearest(key)))
            mine["routed"] = await self._route_now(request, None)
        decision = mine["routed"][0]
        if decision.accepted:
            return "retry"
        return await self.reject(request, decision)

    def _exhausted_for(self, request: dict, sku_ids: list[str], by_id: dict, levels_by_key: dict) -> list[str]:
        """SKUs of the request that nothing could be given of (any quantity) in its mode / at its store."""
        mode = request["mode"]
        if mode == "ship":
            return self._exhausted(sku_ids, by_id, levels_by_key, mode)
        site_doc = by_id.get(request["location_id"])
        if site_doc is None:
            return []
        site = site_of(site_doc)
        return [sku for sku in sku_ids
                if sellable(site, (levels_by_key.get((site.id, sku)) or {}).get("available", 0), mode) <= 0]

    async def _refuse_routed(self, request: dict, decision: Decision, by_id: dict, levels_by_key: dict):
        mode = request["mode"]
        if mode == "ship":
            sku_ids = sorted({line["sku_id"] for line in request["lines"]})
            generation = {sku: self.core.sold_out.generation(sku) for sku in sku_ids}
            self.core.sold_out.mark(self._exhausted(sku_ids, by_id, levels_by_key, mode), mode,
                                    generation=generation)
        return await self.reject(request, decision)

    async def _still_sold_out(self, request: dict, sku_id: str) -> bool:
        """The memo's refresh: does one unit of `sku_id` find nowhere to come from (for this mode/store)?"""
        memo, mode = self.core.sold_out, request["mode"]
        location = request.get("location_id") if mode != "ship" else None
        generation = {sku_id: memo.generation(sku_id)}
        probe = {**request, "lines": [{"sku_id": sku_id, "qty": 1}]}
        decision, by_id, levels_by_key, _, _ = await self._route_now(probe, None)
        if self._exhausted_for(probe, [sku_id], by_id, levels_by_key):
            memo.mark([sku_id], mode, location, nearest=decision.nearest, generation=generation)
        else:
            memo.drop((sku_id, mode, location))
        return memo.state((sku_id, mode, location)) == FRESH

    async def reject(self, request: dict, decision: Decision) -> Decision:
        """Record `stock.reservation_rejected` without a transaction (group commit) and answer the refusal."""
        event = ReservationRejected(
            order_id=request["order_id"], mode=request["mode"],
            lines=[AllocatedLine(sku_id=line["sku_id"], qty=line["qty"]) for line in request["lines"]],
            reason=decision.reason or "sold-out",
            nearest=[NearbyStore(location_id=n["location_id"], distance_m=n["distance_m"]) for n in decision.nearest])
        await self.core.outbox.insert("rejections", {"_id": new_id("rej"), "order_id": request["order_id"],
                                                     "at_ms": now_ms()}, [(event, request["order_id"])])
        return decision

    def _reservation(self, request: dict, site_doc: dict, lines: list[Line], decision: Decision, wanted: str,
                     day: str | None, at: int) -> dict:
        ttl_s = request.get("ttl_s") or self.settings.reservation_ttl_s
        allocations = [{"location_id": site_doc["_id"], "ownership": site_doc.get("ownership", "direct"),
                        "franchisee_id": site_doc.get("franchisee_id"),
                        "lines": [{"sku_id": line.sku_id, "qty": line.qty} for line in lines]}]
        return {"_id": new_id("rsv"), "order_id": request["order_id"], "mode": request["mode"],
                "status": model.RESERVED, "allocations": allocations,
                "level_ids": [level_id(site_doc["_id"], line.sku_id) for line in lines],
                "lines": [{"sku_id": line["sku_id"], "qty": line["qty"]} for line in request["lines"]],
                "location_id": request.get("location_id"), "destination": request.get("destination"),
                "capacity_day": day if request["mode"] == "ship" else None,
                "expires_at_ms": model.expiry_ms(at, ttl_s), "created_at_ms": at, "decision": decision.explain(),
                "request_fingerprint": wanted, "history": [{"status": model.RESERVED, "at_ms": at, "reason": None}],
                "version": 1}
