"""Mongo repository of the order aggregate (the whole order, timeline and returns included, is replaced
as one document under an optimistic version: never a $push of subdocuments, never a positional update)."""
from __future__ import annotations

from pymongo import ASCENDING, DESCENDING

from libs.mongo import ConcurrencyConflict, IndexSpec, Mongo

INDEXES = [
    IndexSpec("orders", [("member_id", ASCENDING)], name="member_orders"),
    IndexSpec("orders", [("store_ids", ASCENDING), ("status", ASCENDING)], name="store_orders"),
    IndexSpec("orders", [("status", ASCENDING), ("expires_at_ms", ASCENDING)], name="status_expiry"),
    IndexSpec("orders", [("status", ASCENDING), ("status_changed_at_ms", ASCENDING)], name="status_age"),
    IndexSpec("orders", [("has_pending_actions", ASCENDING)], name="pending_actions"),
]


class OrderRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.collection = mongo.db["orders"]

    async def get(self, order_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": order_id}, session=session)

    async def get_committed(self, order_id: str) -> dict | None:
        return await self.mongo.read_committed(lambda: self.collection.find_one({"_id": order_id}))

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one(self._stamped(doc, 1), session=session)
        doc["version"] = 1

    async def save(self, doc: dict, session) -> None:
        """Replace the order if nobody changed it since it was read (optimistic version)."""
        expected = doc["version"]
        result = await self.collection.replace_one({"_id": doc["_id"], "version": expected},
                                                   self._stamped(doc, expected + 1), session=session)
        if result.matched_count != 1:
            raise ConcurrencyConflict(f"order {doc['_id']} changed concurrently")
        doc["version"] = expected + 1

    @staticmethod
    def _stamped(doc: dict, version: int) -> dict:
        return {**doc, "version": version, "has_pending_actions": bool(doc.get("pending_actions"))}

    async def find_ids(self, query: dict, limit: int = 200) -> list[str]:
        docs = await self.mongo.read_committed(
            lambda: self.collection.find(query, {"_id": 1}).sort("_id", ASCENDING).limit(limit).to_list())
        return [d["_id"] for d in docs]

    async def page(self, query: dict, cursor: str | None, limit: int) -> tuple[list[dict], str | None]:
        """Newest first (order ids sort by creation time); the cursor is the last id of the page."""
        if cursor:
            query = {**query, "_id": {"$lt": cursor}}
        docs = await self.mongo.read_committed(
            lambda: self.collection.find(query).sort("_id", DESCENDING).limit(limit + 1).to_list())
        next_cursor = docs[limit - 1]["_id"] if len(docs) > limit else None
        return docs[:limit], next_cursor
