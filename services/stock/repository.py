"""Mongo repositories of stock: one per aggregate. Every write takes the caller's transaction session."""
from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, DESCENDING, ReturnDocument

from libs.mongo import ConcurrencyConflict, IndexSpec, Mongo, VersionedRepository
from libs.outbox import EMBEDDED_PENDING, embedded_outbox_index

# Collections whose documents carry their own pending events (the outbox in the aggregate, libs/outbox.py).
EMBEDDED_OUTBOX = ("reservations", "levels", "rejections")

INDEXES = [
    IndexSpec("locations", [("kind", ASCENDING)], name="kind"),
    IndexSpec("levels", [("sku_id", ASCENDING)], name="sku"),
    IndexSpec("levels", [("location_id", ASCENDING), ("sku_id", ASCENDING)], unique=True, name="location_sku"),
    IndexSpec("movements", [("key", ASCENDING)], unique=True, name="key_unique"),
    IndexSpec("movements", [("location_id", ASCENDING), ("sku_id", ASCENDING), ("seq", ASCENDING)],
              name="location_sku_seq"),
    IndexSpec("reservations", [("order_id", ASCENDING)], unique=True, name="order_unique"),
    IndexSpec("reservations", [("status", ASCENDING), ("expires_at_ms", ASCENDING)], name="status_expiry"),
    IndexSpec("capacity", [("day", ASCENDING)], name="day"),
    IndexSpec("transfers", [("status", ASCENDING)], name="status"),
    IndexSpec("rejections", [("order_id", ASCENDING)], name="order"),
    IndexSpec("approvals", [("key", ASCENDING)], unique=True, name="key_unique"),
    IndexSpec("approvals", [("location_id", ASCENDING)], name="location"),
    *(embedded_outbox_index(name) for name in EMBEDDED_OUTBOX),
]


def level_id(location_id: str, sku_id: str) -> str:
    return f"{location_id}:{sku_id}"


class Collection:
    """A repository over one collection, named by the subclass."""

    name = ""

    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db[self.name]


class LocationRepository(VersionedRepository):
    name = "locations"

    async def by_ids(self, location_ids: list[str], session=None) -> list[dict]:
        return await self.collection.find({"_id": {"$in": location_ids}}, session=session) \
            .sort("_id", ASCENDING).to_list()

    async def all(self, session=None) -> list[dict]:
        return await self.collection.find({}, session=session).sort("_id", ASCENDING).to_list()

    async def page(self, after: str | None, limit: int, kind: str | None = None) -> list[dict]:
        query: dict[str, Any] = {}
        if after:
            query["_id"] = {"$gt": after}
        if kind:
            query["kind"] = kind
        return await self.collection.find(query).sort("_id", ASCENDING).limit(limit).to_list()

    async def add_if_missing(self, doc: dict, session) -> None:
        """Demo loading: insert once; a location an admin has since changed is left as it is."""
        await self.collection.update_one({"_id": doc["_id"]}, {"$setOnInsert": {
            **{k: v for k, v in doc.items() if k != "_id"}, "version": 1}}, upsert=True, session=session)


class LevelRepository(Collection):
    """Stock level per (location, SKU). `available` = on_hand - reserved is maintained by every update so
    that plain guarded filters (`available >= q`) decide contention atomically."""

    name = "levels"

    def __init__(self, mongo: Mongo, default_reorder_point: int = 0) -> None:
        super().__init__(mongo)
        self.mongo = mongo
        self.default_reorder_point = default_reorder_point

    async def get(self, location_id: str, sku_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": level_id(location_id, sku_id)}, session=session)

    async def for_skus(self, sku_ids: list[str], session=None, *, in_stock_only: bool = False) -> list[dict]:
        query: dict[str, Any] = {"sku_id": {"$in": sku_ids}}
        if in_stock_only:
            query["available"] = {"$gt": 0}
        return await self.collection.find(query, session=session).to_list()

    async def page(self, query: dict, after: str | None, limit: int) -> list[dict]:
        if after:
            query = {**query, "_id": {"$gt": after}}
        return await self.collection.find(query).sort("_id", ASCENDING).limit(limit).to_list()

    async def ensure(self, location_id: str, sku_id: str, session, reorder_point: int | None = None) -> dict:
        """Create the level at zero if missing (upsert then read: nx ignores $setOnInsert on find-and-modify)."""
        await self.collection.update_one(
            {"_id": level_id(location_id, sku_id)},
            {"$setOnInsert": {"location_id": location_id, "sku_id": sku_id, "on_hand": 0, "reserved": 0,
                              "available": 0, "in_transit": 0, "sold_out": False,
                              "reorder_point": self.default_reorder_point if reorder_point is None else reorder_point}},
            upsert=True, session=session)
        return await self.get(location_id, sku_id, session)

    async def hold(self, location_id: str, sku_id: str, qty: int, held_back: int, session) -> bool:
        """Reserve `qty` if at least qty + held_back is available (held_back = safety stock for online)."""
        result = await self.collection.update_one(
            {"_id": level_id(location_id, sku_id), "available": {"$gte": qty + held_back}},
            {"$inc": {"available": -qty, "reserved": qty}}, session=session)
        return result.modified_count == 1

    async def take(self, location_id: str, sku_id: str, qty: int, held_back: int, at_ms: int) -> dict | None:
        """The fast path's hold: one atomic guarded `$inc` on the level, no transaction. Answers the level
        after the change (so the caller knows exactly what it crossed), or None when not enough is available.
        `held_at_ms` tells the reconciliation job that a reservation may still be on its way."""
        return await self.mongo.read_committed(lambda: self.collection.find_one_and_update(
            {"_id": level_id(location_id, sku_id), "available": {"$gte": qty + held_back}},
            {"$inc": {"available": -qty, "reserved": qty}, "$set": {"held_at_ms": at_ms}},
            return_document=ReturnDocument.AFTER))

    async def give(self, location_id: str, sku_id: str, qty: int, at_ms: int) -> dict | None:
        """Undo a fast-path take (compensation), no transaction; the level after the change."""
        return await self.mongo.read_committed(lambda: self.collection.find_one_and_update(
            {"_id": level_id(location_id, sku_id), "reserved": {"$gte": qty}},
            {"$inc": {"available": qty, "reserved": -qty}, "$set": {"held_at_ms": at_ms}},
            return_document=ReturnDocument.AFTER))

    async def by_id(self, doc_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": doc_id}, session=session)

    async def reserved_or_in(self, ids: list[str]) -> list[dict]:
        """Levels that hold something, or that open reservations say should (the reconciliation's scope)."""
        fields = {"location_id": 1, "sku_id": 1, "on_hand": 1, "reserved": 1, "available": 1, "held_at_ms": 1}
        docs = {}
        for query in ({"reserved": {"$gt": 0}}, {"reserved": {"$lt": 0}}, {"_id": {"$in": ids}}):
            for doc in await self.collection.find(query, fields).to_list():
                docs[doc["_id"]] = doc
        return list(docs.values())

    async def repair(self, level: dict, reserved: int, session) -> None:
        """Set reserved (and available = on_hand - reserved), guarded on the counters the repair was planned on."""
        result = await self.collection.update_one(
            {"_id": level["_id"], "on_hand": level["on_hand"], "reserved": level["reserved"],
             "available": level["available"]},
            {"$set": {"reserved": reserved, "available": level["on_hand"] - reserved}}, session=session)
        if result.matched_count != 1:
            raise ConcurrencyConflict(f"level {level['_id']} changed while being repaired")

    async def unhold(self, location_id: str, sku_id: str, qty: int, session) -> bool:
        result = await self.collection.update_one(
            {"_id": level_id(location_id, sku_id), "reserved": {"$gte": qty}},
            {"$inc": {"available": qty, "reserved": -qty}}, session=session)
        return result.modified_count == 1

    async def ship_held(self, location_id: str, sku_id: str, qty: int, session) -> bool:
        """Held goods leave: on-hand and reserved go down together, available is unchanged."""
        result = await self.collection.update_one(
            {"_id": level_id(location_id, sku_id), "reserved": {"$gte": qty}, "on_hand": {"$gte": qty}},
            {"$inc": {"on_hand": -qty, "reserved": -qty}}, session=session)
        return result.modified_count == 1

    async def change_on_hand(self, location_id: str, sku_id: str, delta: int, expected_on_hand: int,
                             session) -> bool:
        """Apply a movement; guarded on the on-hand it was planned from and on available staying >= 0."""
        query: dict[str, Any] = {"_id": level_id(location_id, sku_id), "on_hand": expected_on_hand}
        if delta < 0:
            query["available"] = {"$gte": -delta}
        result = await self.collection.update_one(query, {"$inc": {"on_hand": delta, "available": delta}},
                                                  session=session)
        return result.modified_count == 1

    async def change_in_transit(self, location_id: str, sku_id: str, delta: int, session) -> bool:
        query: dict[str, Any] = {"_id": level_id(location_id, sku_id)}
        if delta < 0:
            query["in_transit"] = {"$gte": -delta}
        result = await self.collection.update_one(query, {"$inc": {"in_transit": delta}}, session=session)
        return result.modified_count == 1

    async def set_reorder_point(self, location_id: str, sku_id: str, reorder_point: int, session) -> None:
        await self.collection.update_one({"_id": level_id(location_id, sku_id)},
                                         {"$set": {"reorder_point": reorder_point}}, session=session)

    async def upsert_demo(self, location_id: str, sku_id: str, on_hand: int, reorder_point: int, session) -> None:
        """Demo loading: create the level with its stock once; never touches a level that exists."""
        await self.collection.update_one(
            {"_id": level_id(location_id, sku_id)},
            {"$setOnInsert": {"location_id": location_id, "sku_id": sku_id, "on_hand": on_hand, "reserved": 0,
                              "available": on_hand, "in_transit": 0, "sold_out": on_hand <= 0,
                              "reorder_point": reorder_point}},
            upsert=True, session=session)


class MovementLedger(Collection):
    """The append-only ledger: one document per movement, idempotent by its key."""

    name = "movements"

    async def by_key(self, key: str, session=None) -> dict | None:
        return await self.collection.find_one({"key": key}, session=session)

    async def append(self, doc: dict, session) -> None:
        await self.collection.insert_one(doc, session=session)

    async def page(self, query: dict, before_seq: int | None, limit: int) -> list[dict]:
        if before_seq is not None:
            query = {**query, "seq": {"$lt": before_seq}}
        return await self.collection.find(query).sort("seq", DESCENDING).limit(limit).to_list()


class ReservationRepository(VersionedRepository):
    """One reservation per order (unique `order_id`)."""

    name = "reservations"

    async def by_order(self, order_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"order_id": order_id}, session=session)

    async def save(self, doc: dict, session) -> dict:
        """The optimistic save, also guarded on the embedded outbox's state as it was read: a reservation
        whose `stock.reserved` event the relay cleared meanwhile is read again rather than written back with
        that event pending (which would publish it twice)."""
        expected = doc.get("version")
        new = {**doc, "version": (expected or 0) + 1}
        query: dict[str, Any] = {"_id": doc["_id"], "version": {"$exists": False} if expected is None else expected}
        if EMBEDDED_PENDING in doc:
            query[EMBEDDED_PENDING] = doc[EMBEDDED_PENDING]
        result = await self.collection.replace_one(query, new, session=session)
        if result.matched_count != 1:
            raise ConcurrencyConflict(f"reservation {doc['_id']} changed concurrently")
        return new

    async def open_allocations(self, level_id_: str | None = None, session=None) -> list[dict]:
        """Held reservations (all, or those holding at one level), with their allocations only."""
        query: dict[str, Any] = {"status": "reserved"}
        if level_id_ is not None:
            query["level_ids"] = {"$in": [level_id_]}
        return await self.collection.find(query, {"allocations": 1, "level_ids": 1}, session=session).to_list()

    async def expired(self, now_ms: int, limit: int) -> list[dict]:
        return await self.collection.find({"status": "reserved", "expires_at_ms": {"$lte": now_ms}}) \
            .sort("expires_at_ms", ASCENDING).limit(limit).to_list()


class CapacityRepository(Collection):
    """Ship-from-store capacity per location per local day: counter created by upsert, taken by a guarded $inc."""

    name = "capacity"

    @staticmethod
    def key(location_id: str, day: str) -> str:
        return f"{location_id}:{day}"

    async def used_on(self, day: str, session=None) -> dict[str, int]:
        docs = await self.collection.find({"day": day}, session=session).to_list()
        return {doc["location_id"]: doc["used"] for doc in docs}

    async def take(self, location_id: str, day: str, capacity: int, session) -> bool:
        key = self.key(location_id, day)
        await self.collection.update_one({"_id": key}, {"$setOnInsert": {"location_id": location_id, "day": day,
                                                                         "used": 0}},
                                         upsert=True, session=session)
        result = await self.collection.update_one({"_id": key, "used": {"$lt": capacity}}, {"$inc": {"used": 1}},
                                                  session=session)
        return result.modified_count == 1

    async def give_back(self, location_id: str, day: str, session) -> None:
        await self.collection.update_one({"_id": self.key(location_id, day), "used": {"$gt": 0}},
                                         {"$inc": {"used": -1}}, session=session)


class TransferRepository(VersionedRepository):
    """Goods between two locations: in transit until the destination receives them."""

    name = "transfers"


class ApprovalRepository(VersionedRepository):
    """Clerks' movements waiting for (or decided by) a manager of the store; one per movement key."""

    name = "approvals"

    async def by_key(self, key: str, session=None) -> dict | None:
        return await self.collection.find_one({"key": key}, session=session)

    async def page(self, query: dict, before: str | None, limit: int) -> list[dict]:
        if before is not None:
            query = {**query, "_id": {"$lt": before}}
        return await self.collection.find(query).sort("_id", DESCENDING).limit(limit).to_list()
