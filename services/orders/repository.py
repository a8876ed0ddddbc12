"""Mongo repository of the order aggregate (the whole order, timeline and returns included, is replaced
as one document under an optimistic version: never a $push of subdocuments, never a positional update)."""
from __future__ import annotations

from pymongo import ASCENDING, DESCENDING

from libs.mongo import ConcurrencyConflict, IndexSpec, Mongo, insert_versioned, replace_versioned
from libs.outbox import EMBEDDED, EMBEDDED_PENDING, EMBEDDED_SEQ, Outbox, embedded_outbox_index

INDEXES = [
    IndexSpec("orders", [("member_id", ASCENDING)], name="member_orders"),
    IndexSpec("orders", [("store_ids", ASCENDING), ("status", ASCENDING)], name="store_orders"),
    IndexSpec("orders", [("status", ASCENDING), ("expires_at_ms", ASCENDING)], name="status_expiry"),
    IndexSpec("orders", [("status", ASCENDING), ("status_changed_at_ms", ASCENDING)], name="status_age"),
    IndexSpec("orders", [("has_pending_actions", ASCENDING)], name="pending_actions"),
    # One field, for the sweeper's status queries on nx-27017 (which ignores the compound ones above): it
    # then reads the few orders in a status instead of every order, every pass.
    IndexSpec("orders", [("status", ASCENDING)], name="status"),
    # The Idempotency-Key of the checkout that created the order (a digest of caller, route and key): the
    # claim is the order's own insert, a concurrent duplicate loses on this index. Sparse: orders placed
    # without a key, and rejected ones (their key is given back), carry none.
    IndexSpec("orders", [("checkout_key", ASCENDING)], unique=True, name="checkout_key_unique",
              options={"sparse": True}),
    embedded_outbox_index("orders"),
]
# The fields the outbox in the aggregate owns: a single-document save never overwrites them.
_OUTBOX_FIELDS = frozenset({EMBEDDED, EMBEDDED_SEQ, EMBEDDED_PENDING})


class OrderRepository:
    def __init__(self, mongo: Mongo, outbox: Outbox | None = None) -> None:
        self.mongo = mongo
        self.outbox = outbox
        self.collection = mongo.db["orders"]

    async def get(self, order_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": order_id}, session=session)

    async def get_committed(self, order_id: str) -> dict | None:
        return await self.mongo.read_committed(lambda: self.collection.find_one({"_id": order_id}))

    async def add(self, doc: dict, session) -> dict:
        return await insert_versioned(self.collection, self._stamped(doc), session)

    async def by_checkout_key(self, checkout_key: str) -> dict | None:
        return await self.mongo.read_committed(lambda: self.collection.find_one({"checkout_key": checkout_key}))

    async def insert_alone(self, doc: dict, events: list) -> dict:
        """Insert a new order with its events and no transaction (concurrent inserts share one write).
        Raises DuplicateKeyError when its checkout_key is taken (nothing is written then)."""
        new = {**self._stamped(doc), "version": 1}
        await self.outbox.insert("orders", new, [(event, doc["_id"]) for event in events])
        return new

    async def save_alone(self, doc: dict, loaded_fields: set[str], events: list) -> dict:
        """One atomic single-document write of a changed order, guarded by its version, that records its
        events in the order itself: no multi-document transaction. Fields the change removed are unset.
        Raises ConcurrencyConflict when someone changed the order since it was read."""
        expected = doc["version"]
        new = {**self._stamped(doc), "version": expected + 1}
        fields = {k: v for k, v in new.items() if k != "_id" and k not in _OUTBOX_FIELDS}
        update: dict = {"$set": fields}
        removed = {k: "" for k in loaded_fields - set(new) - _OUTBOX_FIELDS - {"_id"}}
        if removed:
            update["$unset"] = removed
        result = await self.outbox.update("orders", {"_id": doc["_id"], "version": expected}, update,
                                          [(event, doc["_id"]) for event in events])
        if result.matched_count != 1:
            raise ConcurrencyConflict(f"orders {doc['_id']} changed concurrently")
        return new

    def embed(self, doc: dict, events: list) -> None:
        """Record `events` inside the order (a transactional save then writes them with it), so every event
        of one order leaves through the same outbox, in order."""
        fields, count = self.outbox.embedding([(event, doc["_id"]) for event in events])
        if not count:
            return
        embedded = dict(doc.get(EMBEDDED) or {})
        for key, value in fields.items():
            if key.startswith(EMBEDDED + "."):
                embedded[key.split(".", 1)[1]] = value
        doc[EMBEDDED] = embedded
        doc[EMBEDDED_SEQ] = int(doc.get(EMBEDDED_SEQ) or 0) + count
        doc[EMBEDDED_PENDING] = True
        for listener in self.outbox.listeners:
            self.mongo.after_commit(listener)

    async def save(self, doc: dict, session) -> dict:
        """Replace the order if nobody changed it since it was read; returns the order as stored."""
        return await replace_versioned(self.collection, self._stamped(doc), session)

    @staticmethod
    def _stamped(doc: dict) -> dict:
        """The flag the follow-up sweeper filters on (an index on a list's emptiness is not portable)."""
        return {**doc, "has_pending_actions": bool(doc.get("pending_actions"))}

    async def find_ids(self, query: dict, limit: int = 200) -> list[str]:
        docs = await self.mongo.read_committed(
            lambda: self.collection.find(query, {"_id": 1}).sort("_id", ASCENDING).limit(limit).to_list())
        return [d["_id"] for d in docs]

    async def of_member(self, member_id: str, limit: int = 500) -> list[dict]:
        """A member's orders (status and lines only), for the limits of limited SKUs."""
        return await self.mongo.read_committed(lambda: self.collection.find(
            {"member_id": member_id}, {"status": 1, "lines": 1}).limit(limit).to_list())

    async def newest_first(self, query: dict, before_id: str | None, limit: int) -> list[dict]:
        """Up to `limit` orders, newest first (order ids sort by creation time), older than `before_id`."""
        if before_id:
            query = {**query, "_id": {"$lt": before_id}}
        return await self.mongo.read_committed(
            lambda: self.collection.find(query).sort("_id", DESCENDING).limit(limit).to_list())
