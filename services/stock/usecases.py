"""Units of work of stock: each one transaction that changes state and records its events (outbox).

Handlers, consumers and jobs call these; the rules themselves live in `domain/`. Functions given a
`session` run inside the caller's transaction (consumers get theirs from the inbox).
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from libs.mongo import ConcurrencyConflict, Mongo
from libs.outbox import Outbox
from services.stock import metrics
from services.stock.domain import model
from services.stock.domain.model import SoldOutMemo, StockError
from services.stock.domain.routing import Decision, Line, Point, Site, route, sellable, serves_mode
from services.stock.events import (AllocatedLine, AllocationData, NearbyStore, ReservationRejected,
                                   StockCommitted, StockLevelLow, StockReleased, StockReserved)
from services.stock.repository import (CapacityRepository, LevelRepository, LocationRepository, MovementLedger,
                                       ReservationRepository, TransferRepository)
from services.stock.settings import StockSettings


def now_ms() -> int:
    return int(time.time() * 1000)


def rfc3339_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class Stock:
    """The stock service's use cases over its repositories."""

    def __init__(self, mongo: Mongo, outbox: Outbox, settings: StockSettings) -> None:
        self.mongo = mongo
        self.outbox = outbox
        self.settings = settings
        self.locations = LocationRepository(mongo)
        self.levels = LevelRepository(mongo, settings.default_reorder_point)
        self.ledger = MovementLedger(mongo)
        self.reservations = ReservationRepository(mongo)
        self.capacity = CapacityRepository(mongo)
        self.transfers = TransferRepository(mongo)
        self.sold_out = SoldOutMemo(settings.sold_out_memo_ttl_s)
        self._last_seq = 0

    def _next_seq(self) -> int:
        """Ledger order (microseconds), strictly increasing in this process so the ledger's cursor never
        skips an entry written in the same microsecond."""
        self._last_seq = max(self._last_seq + 1, time.time_ns() // 1000)
        return self._last_seq

    def capacity_day(self, at_ms: int) -> str:
        local = datetime.fromtimestamp(at_ms / 1000, UTC) + timedelta(hours=self.settings.capacity_day_utc_offset_h)
        return local.strftime("%Y-%m-%d")

    # -- reservations -----------------------------------------------------------------------------
    async def _route_now(self, request: dict, session=None) -> tuple[Decision, dict, dict, str, int]:
        """Route `request` on the current picture (inside the transaction when given its session)."""
        lines = [Line(line["sku_id"], line["qty"]) for line in request["lines"]]
        # Only locations holding some of the goods can take part: with hundreds of stores, the read and the
        # decision's explanation stay the size of the stock picture of these SKUs, not of the whole network.
        level_docs = await self.levels.for_skus(sorted({line.sku_id for line in lines}), session, in_stock_only=True)
        location_ids = {doc["location_id"] for doc in level_docs} | ({request["location_id"]}
                                                                     if request.get("location_id") else set())
        location_docs = await self.locations.by_ids(sorted(location_ids), session)
        stock = {(doc["location_id"], doc["sku_id"]): doc["available"] for doc in level_docs}
        at = now_ms()
        day = self.capacity_day(at)
        capacity_used = await self.capacity.used_on(day, session) if request["mode"] == "ship" else {}
        destination = request.get("destination")
        decision = route(request["mode"], lines, [site_of(doc) for doc in location_docs], stock,
                         capacity_used=capacity_used, location_id=request.get("location_id"),
                         destination=Point(destination["lat"], destination["lng"]) if destination else None,
                         max_splits=self.settings.max_splits)
        levels_by_key = {(doc["location_id"], doc["sku_id"]): doc for doc in level_docs}
        return decision, {doc["_id"]: doc for doc in location_docs}, levels_by_key, day, at

    async def record_rejection(self, request: dict, decision: Decision, session) -> None:
        lines = [Line(line["sku_id"], line["qty"]) for line in request["lines"]]
        await self.outbox.record(session, ReservationRejected(
            order_id=request["order_id"], mode=request["mode"],
            lines=[AllocatedLine(sku_id=l.sku_id, qty=l.qty) for l in lines], reason=decision.reason or "sold-out",
            nearest=[NearbyStore(location_id=n["location_id"], distance_m=n["distance_m"])
                     for n in decision.nearest]), subject=request["order_id"])

    async def reserve(self, request: dict, session) -> tuple[dict, bool] | Decision:
        """Route and hold stock for an order. Returns (reservation, created) or the rejecting Decision."""
        lines = [Line(line["sku_id"], line["qty"]) for line in request["lines"]]
        wanted = _request_fingerprint(request)
        existing = await self.reservations.by_order(request["order_id"], session)
        if existing is not None:
            if existing["request_fingerprint"] != wanted:
                raise StockError("order-id-reused",
                                 "a reservation for this order exists with other lines, mode or store", status=409)
            return existing, False
        sku_ids = sorted({line.sku_id for line in lines})
        if self.sold_out.any_sold_out(sku_ids, request["mode"]):
            decision = Decision(request["mode"], [], [], "rejected", reason="sold-out")
            await self.record_rejection(request, decision, session)
            return decision
        decision, by_id, levels_by_key, day, at = await self._route_now(request, session)
        destination = request.get("destination")
        if not decision.accepted:
            exhausted = self._exhausted(sku_ids, by_id, levels_by_key, request["mode"])
            if exhausted:
                self.mongo.after_commit(lambda: self.sold_out.mark(exhausted, request["mode"]))
            await self.record_rejection(request, decision, session)
            return decision

        allocations = []
        for allocation in decision.allocations:
            site = by_id[allocation.location_id]
            held_back = 0 if request["mode"] == "in_store" else site.get("safety_stock", 0)
            for line in allocation.lines:
                # The snapshot said yes; the guarded update decides. A miss means a concurrent writer
                # (real replica set): retry the whole unit with fresh data.
                if not await self.levels.hold(site["_id"], line.sku_id, line.qty, held_back, session):
                    raise ConcurrencyConflict(f"level {site['_id']}/{line.sku_id} changed while routing")
                level = levels_by_key[(site["_id"], line.sku_id)]
                await self._maybe_low(level, level["available"], level["available"] - line.qty, session)
            if request["mode"] == "ship":
                if not await self.capacity.take(site["_id"], day, site.get("daily_capacity", 0), session):
                    raise ConcurrencyConflict(f"capacity of {site['_id']} taken while routing")
            allocations.append({"location_id": site["_id"], "ownership": site.get("ownership", "direct"),
                                "franchisee_id": site.get("franchisee_id"),
                                "lines": [{"sku_id": l.sku_id, "qty": l.qty} for l in allocation.lines]})
        ttl_s = request.get("ttl_s") or self.settings.reservation_ttl_s
        expires_at_ms = model.expiry_ms(at, ttl_s)
        doc = {"_id": f"rsv_{uuid.uuid4().hex[:20]}", "order_id": request["order_id"], "mode": request["mode"],
               "status": model.RESERVED, "allocations": allocations, "lines": [l.__dict__ for l in lines],
               "location_id": request.get("location_id"), "destination": destination,
               "capacity_day": day if request["mode"] == "ship" else None, "expires_at_ms": expires_at_ms,
               "created_at_ms": at, "decision": decision.explain(), "request_fingerprint": wanted,
               "history": [{"status": model.RESERVED, "at_ms": at, "reason": None}]}
        await self.reservations.add(doc, session)
        await self.outbox.record(session, StockReserved(
            reservation_id=doc["_id"], order_id=doc["order_id"], mode=doc["mode"],
            allocations=_allocation_data(allocations), expires_at=datetime.fromtimestamp(expires_at_ms / 1000, UTC)),
            subject=doc["order_id"])
        doc["version"] = 1
        return doc, True

    async def commit(self, order_id: str, session) -> tuple[dict, bool]:
        doc = await self._reservation(order_id, session)
        if not model.commit_outcome(doc["status"]):
            return doc, False
        at = now_ms()
        for allocation in doc["allocations"]:
            for line in allocation["lines"]:
                before = await self.levels.get(allocation["location_id"], line["sku_id"], session)
                if before is None or not await self.levels.ship_held(allocation["location_id"], line["sku_id"],
                                                                     line["qty"], session):
                    raise RuntimeError(f"reserved stock missing for {order_id} at {allocation['location_id']}")
                await self._append_ledger(session, key=f"commit:{order_id}:{allocation['location_id']}:{line['sku_id']}",
                                          kind="reservation_commit", location_id=allocation["location_id"],
                                          sku_id=line["sku_id"], qty=line["qty"], delta=-line["qty"],
                                          level_before=before, at=at, reference=order_id)
        doc["status"] = model.COMMITTED
        doc["history"] = [*doc.get("history", []), {"status": model.COMMITTED, "at_ms": at, "reason": None}]
        doc = await self.reservations.save(doc, session)
        await self.outbox.record(session, StockCommitted(reservation_id=doc["_id"], order_id=order_id,
                                                         allocations=_allocation_data(doc["allocations"])),
                                 subject=order_id)
        return doc, True

    async def release(self, order_id: str, reason: str, session, *, only_if_expired_at: int | None = None
                      ) -> tuple[dict, bool]:
        doc = await self._reservation(order_id, session)
        if only_if_expired_at is not None and (doc["status"] != model.RESERVED
                                               or not model.is_expired(doc["expires_at_ms"], only_if_expired_at)):
            return doc, False  # the sweeper lost a race with a commit or an extension
        if not model.release_outcome(doc["status"]):
            return doc, False
        for allocation in doc["allocations"]:
            for line in allocation["lines"]:
                if not await self.levels.unhold(allocation["location_id"], line["sku_id"], line["qty"], session):
                    raise RuntimeError(f"reserved stock missing for {order_id} at {allocation['location_id']}")
                self._stock_given_back(line["sku_id"])
            if doc.get("capacity_day"):
                await self.capacity.give_back(allocation["location_id"], doc["capacity_day"], session)
        at = now_ms()
        doc["status"] = model.RELEASED
        doc["release_reason"] = reason
        doc["history"] = [*doc.get("history", []), {"status": model.RELEASED, "at_ms": at, "reason": reason}]
        doc = await self.reservations.save(doc, session)
        await self.outbox.record(session, StockReleased(reservation_id=doc["_id"], order_id=order_id, reason=reason,
                                                        allocations=_allocation_data(doc["allocations"])),
                                 subject=order_id)
        return doc, True

    async def extend(self, order_id: str, ttl_s: int, session) -> dict:
        doc = await self._reservation(order_id, session)
        model.check_extendable(doc["status"])
        doc["expires_at_ms"] = max(doc["expires_at_ms"], model.expiry_ms(now_ms(), ttl_s))
        return await self.reservations.save(doc, session)

    async def _reservation(self, order_id: str, session) -> dict:
        doc = await self.reservations.by_order(order_id, session)
        if doc is None:
            raise StockError("reservation-not-found", f"no reservation for order {order_id}", status=404)
        return doc

    # -- movements --------------------------------------------------------------------------------
    async def record_movement(self, movement: dict, actor: str, session) -> tuple[dict, bool]:
        """Apply one movement and append it to the ledger; a replayed key returns the first result."""
        wanted = fingerprint(movement)
        existing = await self.ledger.by_key(movement["key"], session)
        if existing is not None:
            if existing.get("request_fingerprint") != wanted:
                raise StockError("movement-key-reused", "this movement key was used for a different movement",
                                 status=422)
            return existing, False
        kind = movement["kind"]
        if kind == "transfer_in":
            return await self._receive_transfer(movement, wanted, actor, session), True
        location = await self.locations.get(movement["location_id"], session)
        if location is None:
            raise StockError("unknown-location", f"location {movement['location_id']} does not exist", status=422)
        if kind == "transfer_out":
            destination = await self.locations.get(movement["to_location_id"], session)
            if destination is None or destination["_id"] == location["_id"]:
                raise StockError("unknown-location", "to_location_id must be another existing location", status=422)
        level = await self.levels.ensure(location["_id"], movement["sku_id"], session)
        change = model.plan_movement(kind, qty=movement.get("qty"), delta=movement.get("delta"),
                                     counted=movement.get("counted"), on_hand=level["on_hand"],
                                     reserved=level["reserved"])
        if level["available"] < change.needs_available:
            raise StockError("insufficient-stock",
                             f"only {level['available']} of {movement['sku_id']} are available at {location['_id']} "
                             f"(reserved units cannot leave)")
        if change.on_hand > 0:
            self._stock_given_back(movement["sku_id"])
        if change.on_hand and not await self.levels.change_on_hand(location["_id"], movement["sku_id"],
                                                                   change.on_hand, level["on_hand"], session):
            raise ConcurrencyConflict(f"level {location['_id']}/{movement['sku_id']} changed concurrently")
        transfer_id = None
        if kind == "transfer_out":
            transfer_id = f"trf_{uuid.uuid4().hex[:20]}"
            await self.transfers.add({"_id": transfer_id, "from_location_id": location["_id"],
                                      "to_location_id": movement["to_location_id"], "sku_id": movement["sku_id"],
                                      "qty": movement["qty"], "status": "in_transit", "out_key": movement["key"],
                                      "created_at_ms": now_ms()}, session)
            await self.levels.ensure(movement["to_location_id"], movement["sku_id"], session)
            await self.levels.change_in_transit(movement["to_location_id"], movement["sku_id"], movement["qty"], session)
        await self._maybe_low(level, level["available"], level["available"] + change.on_hand, session,
                              on_hand=level["on_hand"] + change.on_hand)
        entry = await self._append_ledger(session, key=movement["key"], kind=kind, location_id=location["_id"],
                                          sku_id=movement["sku_id"], qty=movement.get("qty"), delta=change.on_hand,
                                          level_before=level, variance=change.variance, reason=movement.get("reason"),
                                          transfer_id=transfer_id, actor=actor, reference=movement.get("reference"),
                                          fingerprint_=wanted)
        return entry, True

    async def _receive_transfer(self, movement: dict, wanted: str, actor: str, session) -> dict:
        transfer = await self.transfers.get(movement["transfer_id"], session)
        if transfer is None:
            raise StockError("unknown-transfer", f"transfer {movement['transfer_id']} does not exist", status=422)
        if movement.get("location_id") not in (None, transfer["to_location_id"]):
            raise StockError("wrong-location", "a transfer is received at its destination", status=422)
        if transfer["status"] != "in_transit":
            raise StockError("transfer-received", "this transfer was already received")
        to, sku, qty = transfer["to_location_id"], transfer["sku_id"], transfer["qty"]
        level = await self.levels.ensure(to, sku, session)
        self._stock_given_back(sku)
        if not await self.levels.change_on_hand(to, sku, qty, level["on_hand"], session):
            raise ConcurrencyConflict(f"level {to}/{sku} changed concurrently")
        await self.levels.change_in_transit(to, sku, -qty, session)
        transfer["status"] = "received"
        transfer["in_key"] = movement["key"]
        await self.transfers.save(transfer, session)
        return await self._append_ledger(session, key=movement["key"], kind="transfer_in", location_id=to, sku_id=sku,
                                         qty=qty, delta=qty, level_before=level, transfer_id=transfer["_id"],
                                         actor=actor, reference=movement.get("reference"), fingerprint_=wanted,
                                         reason=movement.get("reason"))

    async def _append_ledger(self, session, *, key: str, kind: str, location_id: str, sku_id: str, qty: int | None,
                             delta: int, level_before: dict, at: int | None = None, variance: int | None = None,
                             reason: str | None = None, transfer_id: str | None = None, actor: str = "system",
                             reference: str | None = None, fingerprint_: str | None = None) -> dict:
        at = at or now_ms()
        entry = {"_id": f"mov_{uuid.uuid4().hex[:20]}", "key": key, "kind": kind, "location_id": location_id,
                 "sku_id": sku_id, "qty": qty if qty is not None else abs(delta), "delta": delta,
                 "on_hand_before": level_before["on_hand"], "on_hand_after": level_before["on_hand"] + delta,
                 "reserved": level_before["reserved"],
                 "available_after": level_before["available"] + (0 if kind == "reservation_commit" else delta),
                 "variance": variance, "reason": reason, "transfer_id": transfer_id, "actor": actor,
                 "reference": reference, "at_ms": at, "seq": self._next_seq(),
                 "request_fingerprint": fingerprint_}
        await self.ledger.append(entry, session)
        metrics.MOVEMENTS.labels(kind).inc()
        return entry

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

    def _stock_given_back(self, sku_id: str) -> None:
        # Forget now and again after commit: a rejection committed in between must not keep it marked.
        self.sold_out.forget(sku_id)
        self.mongo.after_commit(lambda: self.sold_out.forget(sku_id))

    async def _maybe_low(self, level: dict, before: int, after: int, session, on_hand: int | None = None) -> None:
        reorder_point = level.get("reorder_point", self.settings.default_reorder_point)
        if model.crossed_below(before, after, reorder_point):
            await self.outbox.record(session, StockLevelLow(location_id=level["location_id"], sku_id=level["sku_id"],
                                                            available=after,
                                                            on_hand=level["on_hand"] if on_hand is None else on_hand,
                                                            reorder_point=reorder_point), subject=level["_id"])
            self.mongo.after_commit(metrics.LEVEL_LOW.inc)


def site_of(doc: dict) -> Site:
    capabilities = doc.get("capabilities", {})
    return Site(id=doc["_id"], kind=doc.get("kind", "store"), lat=doc["lat"], lng=doc["lng"],
                ownership=doc.get("ownership", "direct"), franchisee_id=doc.get("franchisee_id"),
                pickup=capabilities.get("pickup", False), ship=capabilities.get("ship", False),
                sell_online=capabilities.get("sell_online", True), active=doc.get("active", True),
                daily_capacity=doc.get("daily_capacity", 0), safety_stock=doc.get("safety_stock", 0))


def _allocation_data(allocations: list[dict]) -> list[AllocationData]:
    return [AllocationData.model_validate(a) for a in allocations]


def _request_fingerprint(request: dict) -> str:
    lines: dict[str, int] = {}
    for line in request["lines"]:
        lines[line["sku_id"]] = lines.get(line["sku_id"], 0) + line["qty"]
    return fingerprint({"mode": request["mode"], "lines": sorted(lines.items()),
                        "location_id": request.get("location_id")})


def reservation_view(doc: dict) -> dict:
    """The contract's answer for a reservation."""
    return {"reservation_id": doc["_id"], "order_id": doc["order_id"], "status": doc["status"], "mode": doc["mode"],
            "allocations": doc["allocations"], "expires_at": rfc3339_ms(doc["expires_at_ms"]),
            "decision": doc["decision"], "release_reason": doc.get("release_reason"),
            "history": [{"status": h["status"], "at": rfc3339_ms(h["at_ms"]), "reason": h.get("reason")}
                        for h in doc.get("history", [])]}


def movement_view(doc: dict) -> dict:
    keys = ("key", "kind", "location_id", "sku_id", "qty", "delta", "on_hand_before", "on_hand_after", "reserved",
            "available_after", "variance", "reason", "transfer_id", "actor", "reference")
    return {"id": doc["_id"], **{k: doc.get(k) for k in keys}, "at": rfc3339_ms(doc["at_ms"])}


STOCK = web.AppKey("stock", Stock)
