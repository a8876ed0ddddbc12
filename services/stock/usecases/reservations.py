"""Reservations: route an order's lines over the network, hold the stock, then commit, release or extend.

Orders calls these through the internal routes; the sweeper job and the order-cancelled consumer call the
same methods (inside their own unit of work, which these join).
"""
from __future__ import annotations

import asyncio
import time

from aiohttp import web

from libs.clock import from_ms, now_ms
from libs.ids import new_id
from libs.logging import get_logger
from libs.mongo import ConcurrencyConflict
from libs.refusal import CONFLICT, INVALID, NOT_FOUND, Refusal
from services.stock import metrics
from services.stock.domain import model
from services.stock.domain.model import StockError
from services.stock.domain.routing import Decision, Line, Point, route, sellable, serves_mode
from services.stock.events import AllocatedLine, NearbyStore, ReservationRejected, StockCommitted, StockReleased, \
    StockReserved
from services.stock.repository import level_id
from services.stock.usecases.core import (StockCore, allocation_data, fingerprint, reservation_view, site_of,
                                          transaction_replaying_duplicates)
from services.stock.usecases.holding import FastReservations

log = get_logger("stock.reservations")


def rejection(order_id: str, decision: Decision) -> Refusal:
    """How a routing decision that cannot serve the order is answered."""
    if decision.reason == "sold-out":
        code, kind, detail = "sold-out", CONFLICT, "not enough stock to serve this order"
    else:
        code = "unknown-location" if decision.reason == "unknown-location" else "location-cannot-serve"
        kind = INVALID if decision.reason == "unknown-location" else CONFLICT
        detail = f"the order cannot be served: {decision.reason}"
    return StockError(code, detail, kind=kind, order_id=order_id, nearest=decision.nearest,
                      decision=decision.explain())


def request_fingerprint(request: dict) -> str:
    lines: dict[str, int] = {}
    for line in request["lines"]:
        lines[line["sku_id"]] = lines.get(line["sku_id"], 0) + line["qty"]
    return fingerprint({"mode": request["mode"], "lines": sorted(lines.items()),
                        "location_id": request.get("location_id")})


class Reservations:
    """Stock held for orders: one reservation per order id, idempotent at every step."""

    def __init__(self, core: StockCore) -> None:
        self.core = core
        self.mongo = core.mongo
        self.settings = core.settings
        self.fast = FastReservations(core, self._route_now, self._exhausted)
        self._in_flight: dict[str, asyncio.Future] = {}

    # -- reading ----------------------------------------------------------------------------------
    async def get(self, order_id: str) -> dict:
        doc = await self.core.reservations.by_order(order_id)
        if doc is None:
            raise Refusal("not-found", "reservation not found", kind=NOT_FOUND)
        return reservation_view(doc)

    # -- reserving --------------------------------------------------------------------------------
    async def reserve(self, request: dict) -> dict:
        """Route and hold stock for an order; the same order again answers the first reservation.

        Concurrent requests of one order in this process wait for the first one and then replay it (their
        holds would otherwise compete with it for the last units). Across replicas the unique order id
        decides (the fast path's loser gives its units back)."""
        order_id = request["order_id"]
        while (leader := self._in_flight.get(order_id)) is not None:
            await asyncio.shield(leader)
        done = self._in_flight[order_id] = asyncio.get_running_loop().create_future()
        try:
            return await self._reserve_once(request)
        finally:
            self._in_flight.pop(order_id, None)
            done.set_result(None)

    async def _reserve_once(self, request: dict) -> dict:
        mode = request["mode"]
        started = time.perf_counter()
        outcome = None
        if self.mongo.current_session() is None:  # inside a unit of work, the reservation must join it
            outcome = await self.fast.reserve(request, request_fingerprint(request), self._answer_existing)
        if outcome is None:
            metrics.RESERVE_PATH.labels("transactional").inc()
            outcome = await transaction_replaying_duplicates(self.mongo, lambda s: self._reserve(request, s))
        metrics.RESERVE_LATENCY.labels(mode).observe(time.perf_counter() - started)
        if isinstance(outcome, Decision):
            metrics.RESERVATIONS.labels(mode, "rejected").inc()
            raise rejection(request["order_id"], outcome)
        doc, created = outcome
        if created:
            metrics.RESERVATIONS.labels(mode, "reserved").inc()
            metrics.RESERVED_UNITS.labels(mode).inc(sum(line["qty"] for line in request["lines"]))
            metrics.ROUTING_LOCATIONS.labels(mode).observe(len(doc["allocations"]))
        else:
            metrics.RESERVATIONS.labels(mode, "replayed").inc()
        return reservation_view(doc)

    async def _reserve(self, request: dict, session) -> tuple[dict, bool] | Decision:
        """Returns (reservation, created) or the rejecting Decision (whose event is recorded all the same)."""
        wanted = request_fingerprint(request)
        existing = await self.core.reservations.by_order(request["order_id"], session)
        if existing is not None:
            return self._answer_existing(existing, wanted), False
        sku_ids = sorted({line["sku_id"] for line in request["lines"]})
        if self.core.sold_out.any_sold_out(sku_ids, request["mode"]):
            decision = Decision(request["mode"], [], [], "rejected", reason="sold-out")
            await self._record_rejection(request, decision, session)
            return decision
        decision, by_id, levels_by_key, day, at = await self._route_now(request, session)
        if not decision.accepted:
            exhausted = self._exhausted(sku_ids, by_id, levels_by_key, request["mode"])
            if exhausted:
                self.mongo.after_commit(lambda: self.core.sold_out.mark(exhausted, request["mode"]))
            await self._record_rejection(request, decision, session)
            return decision
        allocations = await self._hold(request["mode"], decision, by_id, levels_by_key, day, session)
        return await self._add(request, decision, allocations, wanted, day, at, session), True

    @staticmethod
    def _answer_existing(existing: dict, wanted: str) -> dict:
        """The same order again: the first answer; a tombstone (released before it was reserved) refuses."""
        if existing.get("tombstone"):
            raise StockError("reservation-released", "this order was released before its reservation arrived; "
                                                     "nothing is held for it")
        if existing["request_fingerprint"] != wanted:
            raise StockError("order-id-reused", "a reservation for this order exists with other lines, mode or store")
        return existing

    async def _route_now(self, request: dict, session) -> tuple[Decision, dict, dict, str, int]:
        """Route `request` on the current picture, inside the transaction."""
        core = self.core
        lines = [Line(line["sku_id"], line["qty"]) for line in request["lines"]]
        # Only locations holding some of the goods can take part: with hundreds of stores, the read and the
        # decision's explanation stay the size of the stock picture of these SKUs, not of the whole network.
        level_docs = await core.levels.for_skus(sorted({line.sku_id for line in lines}), session, in_stock_only=True)
        location_ids = {doc["location_id"] for doc in level_docs} | ({request["location_id"]}
                                                                     if request.get("location_id") else set())
        location_docs = await core.locations.by_ids(sorted(location_ids), session)
        stock = {(doc["location_id"], doc["sku_id"]): doc["available"] for doc in level_docs}
        at = now_ms()
        day = core.capacity_day(at)
        capacity_used = await core.capacity.used_on(day, session) if request["mode"] == "ship" else {}
        destination = request.get("destination")
        decision = route(request["mode"], lines, [site_of(doc) for doc in location_docs], stock,
                         capacity_used=capacity_used, location_id=request.get("location_id"),
                         destination=Point(destination["lat"], destination["lng"]) if destination else None,
                         max_splits=self.settings.max_splits)
        levels_by_key = {(doc["location_id"], doc["sku_id"]): doc for doc in level_docs}
        return decision, {doc["_id"]: doc for doc in location_docs}, levels_by_key, day, at

    async def _hold(self, mode: str, decision: Decision, by_id: dict, levels_by_key: dict, day: str,
                    session) -> list[dict]:
        """Hold what the decision allocated; the guarded updates, not the snapshot, decide."""
        core = self.core
        allocations = []
        for allocation in decision.allocations:
            site = by_id[allocation.location_id]
            held_back = 0 if mode == "in_store" else site.get("safety_stock", 0)
            for line in allocation.lines:
                # A miss means a concurrent writer (real replica set): retry the whole unit with fresh data.
                if not await core.levels.hold(site["_id"], line.sku_id, line.qty, held_back, session):
                    raise ConcurrencyConflict(f"level {site['_id']}/{line.sku_id} changed while routing")
                level = levels_by_key[(site["_id"], line.sku_id)]
                await core.maybe_low(level, level["available"], level["available"] - line.qty, session)
                await core.note_available(site["_id"], line.sku_id, level["available"] - line.qty, falling=True,
                                          flagged=bool(level.get("sold_out")))
            if mode == "ship":
                if not await core.capacity.take(site["_id"], day, site.get("daily_capacity", 0), session):
                    raise ConcurrencyConflict(f"capacity of {site['_id']} taken while routing")
            allocations.append({"location_id": site["_id"], "ownership": site.get("ownership", "direct"),
                                "franchisee_id": site.get("franchisee_id"),
                                "lines": [{"sku_id": l.sku_id, "qty": l.qty} for l in allocation.lines]})
        return allocations

    async def _add(self, request: dict, decision: Decision, allocations: list[dict], wanted: str, day: str, at: int,
                   session) -> dict:
        ttl_s = request.get("ttl_s") or self.settings.reservation_ttl_s
        expires_at_ms = model.expiry_ms(at, ttl_s)
        lines = [{"sku_id": line["sku_id"], "qty": line["qty"]} for line in request["lines"]]
        doc = {"_id": new_id("rsv"), "order_id": request["order_id"], "mode": request["mode"],
               "status": model.RESERVED, "allocations": allocations, "lines": lines,
               "level_ids": [level_id(a["location_id"], line["sku_id"]) for a in allocations for line in a["lines"]],
               "location_id": request.get("location_id"), "destination": request.get("destination"),
               "capacity_day": day if request["mode"] == "ship" else None, "expires_at_ms": expires_at_ms,
               "created_at_ms": at, "decision": decision.explain(), "request_fingerprint": wanted,
               "history": [{"status": model.RESERVED, "at_ms": at, "reason": None}]}
        await self.core.reservations.add(doc, session)
        await self.core.outbox.record(session, StockReserved(
            reservation_id=doc["_id"], order_id=doc["order_id"], mode=doc["mode"],
            allocations=allocation_data(allocations), expires_at=from_ms(expires_at_ms)),
            subject=doc["order_id"])
        doc["version"] = 1
        return doc

    async def _record_rejection(self, request: dict, decision: Decision, session) -> None:
        await self.core.outbox.record(session, ReservationRejected(
            order_id=request["order_id"], mode=request["mode"],
            lines=[AllocatedLine(sku_id=line["sku_id"], qty=line["qty"]) for line in request["lines"]],
            reason=decision.reason or "sold-out",
            nearest=[NearbyStore(location_id=n["location_id"], distance_m=n["distance_m"])
                     for n in decision.nearest]), subject=request["order_id"])

    @staticmethod
    def _exhausted(sku_ids: list[str], locations: dict[str, dict], levels: dict[tuple[str, str], dict],
                   mode: str) -> list[str]:
        """SKUs that no location taking part in `mode` could give, whatever the quantity (capacity aside)."""
        sites = {loc_id: site_of(doc) for loc_id, doc in locations.items()}
        open_for_mode = {loc_id for loc_id, site in sites.items() if serves_mode(site, mode)}
        return [sku for sku in sku_ids
                if not any(sellable(sites[loc_id], level["available"], mode) > 0
                           for (loc_id, level_sku), level in levels.items()
                           if level_sku == sku and loc_id in open_for_mode)]

    # -- after the hold ---------------------------------------------------------------------------
    async def commit(self, order_id: str) -> dict:
        """The goods leave: on-hand goes down and the ledger says so. Committing twice is a replay."""
        doc, changed = await self.mongo.transaction(lambda s: self._commit(order_id, s))
        if changed:
            metrics.COMMITS.inc()
        return reservation_view(doc)

    async def _commit(self, order_id: str, session) -> tuple[dict, bool]:
        core = self.core
        doc = await self._reservation(order_id, session)
        if not model.commit_outcome(doc["status"]):
            return doc, False
        at = now_ms()
        for allocation in doc["allocations"]:
            location_id = allocation["location_id"]
            for line in allocation["lines"]:
                before = await core.levels.get(location_id, line["sku_id"], session)
                if before is None or not await core.levels.ship_held(location_id, line["sku_id"], line["qty"],
                                                                     session):
                    raise RuntimeError(f"reserved stock missing for {order_id} at {location_id}")
                await core.append_ledger(session, key=f"commit:{order_id}:{location_id}:{line['sku_id']}",
                                         kind="reservation_commit", location_id=location_id, sku_id=line["sku_id"],
                                         qty=line["qty"], delta=-line["qty"], level_before=before, at=at,
                                         reference=order_id)
        doc = await self._move_to(doc, model.COMMITTED, at, None, session)
        await core.outbox.record(session, StockCommitted(reservation_id=doc["_id"], order_id=order_id,
                                                         allocations=allocation_data(doc["allocations"])),
                                 subject=order_id)
        return doc, True

    async def release(self, order_id: str, reason: str) -> dict:
        """Give the held stock (and ship capacity) back. Releasing twice is a replay."""
        doc, changed = await transaction_replaying_duplicates(self.mongo, lambda s: self._release(order_id, reason, s))
        if changed:
            metrics.RELEASES.labels(reason).inc()
        return reservation_view(doc)

    async def release_for_cancelled_order(self, order_id: str) -> None:
        """Safety net for an order cancelled at orders: release what it still holds, if anything."""
        async def unit(session) -> bool:
            if await self.core.reservations.by_order(order_id, session) is None:
                # Never reserved (rejected), or cancelled before its reservation arrived: a tombstone refuses
                # a late one, so nothing is held for a cancelled order.
                await self._tombstone(order_id, "order_cancelled", session)
                return False
            try:
                _, changed = await self._release(order_id, "order_cancelled", session)
            except StockError as error:
                # Committed goods have left; a cancelled-after-commit order is a return, not a release.
                log.warning("stock.cancel_after_commit", order_id=order_id, code=error.code)
                return False
            return changed

        if await self.mongo.transaction(unit):
            self.mongo.after_commit(metrics.RELEASES.labels("order_cancelled").inc)

    async def release_expired(self) -> int:
        """Release every held reservation past its expiry, each in its own unit of work."""
        released = 0
        at = now_ms()
        due = await self.mongo.read_committed(lambda: self.core.reservations.expired(at, self.settings.sweeper_batch))
        for doc in due:
            _, changed = await self.mongo.transaction(
                lambda s, order_id=doc["order_id"]: self._release(order_id, "expired", s, only_if_expired_at=at))
            if changed:
                released += 1
                metrics.RELEASES.labels("expired").inc()
        if released:
            log.info("stock.reservations_expired", released=released)
        return released

    async def _release(self, order_id: str, reason: str, session, *, only_if_expired_at: int | None = None
                       ) -> tuple[dict, bool]:
        core = self.core
        if only_if_expired_at is None and await core.reservations.by_order(order_id, session) is None:
            return await self._tombstone(order_id, reason, session), False
        doc = await self._reservation(order_id, session)
        if only_if_expired_at is not None and (doc["status"] != model.RESERVED
                                               or not model.is_expired(doc["expires_at_ms"], only_if_expired_at)):
            return doc, False  # the sweeper lost a race with a commit or an extension
        if not model.release_outcome(doc["status"]):
            return doc, False
        for allocation in doc["allocations"]:
            for line in allocation["lines"]:
                if not await core.levels.unhold(allocation["location_id"], line["sku_id"], line["qty"], session):
                    raise RuntimeError(f"reserved stock missing for {order_id} at {allocation['location_id']}")
                core.stock_given_back(line["sku_id"])
                after = await core.levels.get(allocation["location_id"], line["sku_id"], session)
                await core.note_available(allocation["location_id"], line["sku_id"], after["available"],
                                          falling=False, flagged=bool(after.get("sold_out")))
            if doc.get("capacity_day"):
                await core.capacity.give_back(allocation["location_id"], doc["capacity_day"], session)
        doc["release_reason"] = reason
        doc = await self._move_to(doc, model.RELEASED, now_ms(), reason, session)
        await core.outbox.record(session, StockReleased(reservation_id=doc["_id"], order_id=order_id, reason=reason,
                                                        allocations=allocation_data(doc["allocations"])),
                                 subject=order_id)
        return doc, True

    async def _tombstone(self, order_id: str, reason: str, session) -> dict:
        """A released record for an order that held nothing: a later reserve of it is refused (sticky release:
        a compensating release that overtook its reserve is not undone by the late reserve)."""
        at = now_ms()
        doc = await self.core.reservations.add({
            "_id": new_id("rsv"), "order_id": order_id, "mode": None, "status": model.RELEASED, "tombstone": True,
            "allocations": [], "lines": [], "level_ids": [], "location_id": None, "destination": None,
            "capacity_day": None, "expires_at_ms": at, "created_at_ms": at, "release_reason": reason,
            "decision": {"strategy": "released-before-reserved", "reason": reason, "candidates": [], "chosen": []},
            "request_fingerprint": None, "history": [{"status": model.RELEASED, "at_ms": at, "reason": reason}]},
            session)
        self.mongo.after_commit(metrics.TOMBSTONES.inc)
        return doc

    async def extend(self, order_id: str, ttl_s: int) -> dict:
        """Hold longer (a paid pickup order waiting for collection); never shortens a hold."""
        if ttl_s > self.settings.reservation_max_ttl_s:
            raise Refusal("validation-error", f"ttl_s may be at most {self.settings.reservation_max_ttl_s}",
                          kind=INVALID)

        async def unit(session) -> dict:
            doc = await self._reservation(order_id, session)
            model.check_extendable(doc["status"])
            doc["expires_at_ms"] = max(doc["expires_at_ms"], model.expiry_ms(now_ms(), ttl_s))
            return await self.core.reservations.save(doc, session)

        return reservation_view(await self.mongo.transaction(unit))

    async def _move_to(self, doc: dict, status: str, at: int, reason: str | None, session) -> dict:
        doc["status"] = status
        doc["history"] = [*doc.get("history", []), {"status": status, "at_ms": at, "reason": reason}]
        return await self.core.reservations.save(doc, session)

    async def _reservation(self, order_id: str, session) -> dict:
        doc = await self.core.reservations.by_order(order_id, session)
        if doc is None:
            raise StockError("reservation-not-found", f"no reservation for order {order_id}", kind=NOT_FOUND)
        return doc


RESERVATIONS = web.AppKey("reservations", Reservations)
