"""What every stock use case shares: the repositories, the ledger writer, the sold-out memo, the views.

Built once at start-up (`StockCore`) and handed to each use case class, so the reservations and the movements
write one ledger (one `seq` order) and forget the same sold-out memo.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pymongo.errors import DuplicateKeyError, PyMongoError

from libs.clock import now_ms, rfc3339
from libs.ids import new_id
from libs.mongo import ConcurrencyConflict, Mongo
from libs.outbox import Outbox
from libs.principal import Principal
from libs.refusal import FORBIDDEN, NOT_FOUND, UNAVAILABLE, Refusal
from services.stock import metrics
from services.stock.domain import model
from services.stock.domain.model import SoldOutMemo
from services.stock.domain.routing import Site
from services.stock.events import AllocationData, StockLevelLow, StockSkuExhausted, StockSkuReplenished
from services.stock.repository import (ApprovalRepository, CapacityRepository, LevelRepository, LocationRepository, MovementLedger,
                                       ReservationRepository, TransferRepository, level_id)
from services.stock.settings import StockSettings

T = TypeVar("T")


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def contention() -> Refusal:
    return Refusal("contention", "stock is under heavy contention; nothing was changed, retry shortly",
                   kind=UNAVAILABLE, retry_after_s=1)


async def transaction_replaying_duplicates(mongo: Mongo, unit: Callable[[Any], Awaitable[T]]) -> T:
    """Run `unit` as one unit of work, answering races as a replay.

    When a concurrent request with the same order id / movement key committed first (unique index, real
    replica set), run it again: it then finds that record and answers as its replay. When the contention
    outlasts the transaction helper's retries, refuse as `contention` (503, Retry-After) rather than a 500:
    nothing was changed and the caller may simply try again. Inside a unit of work already in progress
    (an `Idempotency-Key` answer being stored), errors go to its owner, which retries or aborts the whole.
    """
    if mongo.current_session() is not None:
        return await mongo.transaction(unit)
    try:
        try:
            return await mongo.transaction(unit)
        except DuplicateKeyError:
            return await mongo.transaction(unit)
    except ConcurrencyConflict:
        raise contention() from None
    except PyMongoError as exc:
        if exc.has_error_label("TransientTransactionError"):
            raise contention() from None
        raise


def may_write_at(principal: Principal, location_id: str | None) -> None:
    if not principal.can_see_store(location_id):
        raise Refusal("forbidden", "store staff may change stock only in their own store", kind=FORBIDDEN)


def may_approve_at(principal: Principal, location_id: str | None) -> bool:
    """HQ or a manager of that store: who may move stock in bulk and approve a clerk's movement (orders' returns
    are trusted by their scope, not here)."""
    return principal.is_admin or (principal.has("store_manager") and principal.can_see_store(location_id))


class StockCore:
    """The repositories and the shared in-process state of stock."""

    def __init__(self, mongo: Mongo, outbox: Outbox, settings: StockSettings) -> None:
        self.mongo, self.outbox, self.settings = mongo, outbox, settings
        self.locations = LocationRepository(mongo)
        self.levels = LevelRepository(mongo, settings.default_reorder_point)
        self.ledger = MovementLedger(mongo)
        self.reservations = ReservationRepository(mongo)
        self.capacity = CapacityRepository(mongo)
        self.transfers = TransferRepository(mongo)
        self.approvals = ApprovalRepository(mongo)
        self.sold_out = SoldOutMemo(settings.sold_out_memo_ttl_s)
        self._last_seq = 0

    def next_seq(self) -> int:
        """Ledger order (microseconds), strictly increasing in this process so the ledger's cursor never
        skips an entry written in the same microsecond."""
        self._last_seq = max(self._last_seq + 1, time.time_ns() // 1000)
        return self._last_seq

    def capacity_day(self, at_ms: int) -> str:
        return self.local_time(at_ms).strftime("%Y-%m-%d")

    def local_time(self, at_ms: int) -> datetime:
        """The stores' local time (capacity days and opening hours are counted in it)."""
        return datetime.fromtimestamp(at_ms / 1000, UTC) + timedelta(hours=self.settings.capacity_day_utc_offset_h)

    async def visible_stores(self, principal: Principal) -> list[str]:
        """The stores a non-HQ caller may read: staff their own, a franchisee every store it runs."""
        stores = set(principal.store_ids)
        if principal.has("franchisee") and principal.franchisee_id:
            stores |= {doc["_id"] for doc in await self.locations.all()
                       if doc.get("franchisee_id") == principal.franchisee_id}
        return sorted(stores)

    async def readable_filter(self, principal: Principal, location_id: str | None) -> dict:
        """The location filter of a list the caller reads; a store it may not see does not exist for it."""
        if location_id:
            if not principal.is_admin and location_id not in await self.visible_stores(principal):
                raise Refusal("not-found", "location not found", kind=NOT_FOUND)
            return {"location_id": location_id}
        if not principal.is_admin:
            return {"location_id": {"$in": await self.visible_stores(principal)}}
        return {}

    async def append_ledger(self, session, *, key: str, kind: str, location_id: str, sku_id: str, qty: int | None,
                            delta: int, level_before: dict, at: int | None = None, variance: int | None = None,
                            reason: str | None = None, transfer_id: str | None = None, actor: str = "system",
                            reference: str | None = None, fingerprint_: str | None = None,
                            extra: dict | None = None) -> dict:
        at = at or now_ms()
        entry = {"_id": new_id("mov"), "key": key, "kind": kind, "location_id": location_id,
                 "sku_id": sku_id, "qty": qty if qty is not None else abs(delta), "delta": delta,
                 "on_hand_before": level_before["on_hand"], "on_hand_after": level_before["on_hand"] + delta,
                 "reserved": level_before["reserved"],
                 "available_after": level_before["available"] + (0 if kind == "reservation_commit" else delta),
                 "variance": variance, "reason": reason, "transfer_id": transfer_id, "actor": actor,
                 "reference": reference, "at_ms": at, "seq": self.next_seq(),
                 "request_fingerprint": fingerprint_, **(extra or {})}
        await self.ledger.append(entry, session)
        metrics.MOVEMENTS.labels(kind).inc()
        return entry

    def stock_given_back(self, sku_id: str) -> None:
        # Forget now and again after commit: a rejection committed in between must not keep it marked.
        self.sold_out.forget(sku_id)
        self.mongo.after_commit(lambda: self.sold_out.forget(sku_id))

    async def note_available(self, location_id: str, sku_id: str, available_after: int, *, falling: bool,
                             flagged: bool | None = None) -> None:
        """Keep the level's sold-out flag and publish its edges: `stock.sku.exhausted` when available
        reaches 0, `stock.sku.replenished` when it is above 0 again. Each edge is one guarded update of the
        level that carries its event (outbox in the aggregate), so concurrent changes publish each edge once;
        inside a unit of work it joins it. `flagged` is the flag as the caller's change saw it (None: unknown)."""
        lvl = level_id(location_id, sku_id)
        if falling and available_after <= 0 and flagged is not True:
            await self.outbox.update("levels", {"_id": lvl, "available": {"$lte": 0},
                                                "sold_out": {"$in": [False, None]}},
                                     {"$set": {"sold_out": True}},
                                     [(StockSkuExhausted(location_id=location_id, sku_id=sku_id), lvl)])
        elif not falling and available_after > 0 and flagged is not False:
            await self.outbox.update("levels", {"_id": lvl, "available": {"$gt": 0}, "sold_out": True},
                                     {"$set": {"sold_out": False}},
                                     [(StockSkuReplenished(location_id=location_id, sku_id=sku_id,
                                                           available=available_after), lvl)])

    async def maybe_low(self, level: dict, before: int, after: int, session, on_hand: int | None = None) -> None:
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


def allocation_data(allocations: list[dict]) -> list[AllocationData]:
    return [AllocationData.model_validate(a) for a in allocations]


# --- views: the API's answers ----------------------------------------------------------------

def reservation_view(doc: dict) -> dict:
    """The contract's answer for a reservation."""
    return {"reservation_id": doc["_id"], "order_id": doc["order_id"], "status": doc["status"], "mode": doc["mode"],
            "allocations": doc["allocations"], "expires_at": rfc3339(doc["expires_at_ms"]),
            "decision": doc["decision"], "release_reason": doc.get("release_reason"),
            "history": [{"status": h["status"], "at": rfc3339(h["at_ms"]), "reason": h.get("reason")}
                        for h in doc.get("history", [])]}


def movement_view(doc: dict) -> dict:
    keys = ("key", "kind", "location_id", "sku_id", "qty", "delta", "on_hand_before", "on_hand_after", "reserved",
            "available_after", "variance", "reason", "note", "transfer_id", "actor", "reference", "approval_id",
            "approved_by")
    return {"id": doc["_id"], **{k: doc.get(k) for k in keys}, "at": rfc3339(doc["at_ms"])}


def location_view(doc: dict) -> dict:
    return {"id": doc["_id"], "name": doc["name"], "kind": doc["kind"], "ownership": doc.get("ownership", "direct"),
            "franchisee_id": doc.get("franchisee_id"), "lat": doc["lat"], "lng": doc["lng"],
            "address": doc.get("address", ""), "opening_hours": doc.get("opening_hours", ""),
            "capabilities": doc.get("capabilities", {}), "daily_capacity": doc.get("daily_capacity", 0),
            "safety_stock": doc.get("safety_stock", 0), "active": doc.get("active", True)}


def approval_view(doc: dict) -> dict:
    return {"id": doc["_id"], "key": doc["key"], "status": doc["status"], "kind": doc["kind"],
            "location_id": doc["location_id"], "sku_id": doc["sku_id"], "reason": doc["reason"],
            "units": doc["units"], "movement": {k: v for k, v in doc["movement"].items() if k != "key"},
            "requested_by": doc["requested_by"], "requested_at": rfc3339(doc["requested_at_ms"]),
            "decided_by": doc.get("decided_by"),
            "decided_at": rfc3339(doc["decided_at_ms"]) if doc.get("decided_at_ms") else None,
            "decision_note": doc.get("decision_note"), "movement_id": doc.get("movement_id")}


def level_view(doc: dict) -> dict:
    return {"location_id": doc["location_id"], "sku_id": doc["sku_id"], "on_hand": doc["on_hand"],
            "reserved": doc["reserved"], "available": doc["available"], "in_transit": doc.get("in_transit", 0),
            "reorder_point": doc.get("reorder_point", 0)}
