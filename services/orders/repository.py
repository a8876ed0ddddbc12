"""Mongo repository of the order aggregate (the whole order, timeline and returns included, is replaced
as one document under an optimistic version: never a $push of subdocuments, never a positional update)."""
from __future__ import annotations

from pymongo import ASCENDING, DESCENDING

from libs.mongo import IndexSpec, Mongo, insert_versioned, replace_versioned

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

    async def add(self, doc: dict, session) -> dict:
        return await insert_versioned(self.collection, self._stamped(doc), session)

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

    async def newest_first(self, query: dict, before_id: str | None, limit: int) -> list[dict]:
        """Up to `limit` orders, newest first (order ids sort by creation time), older than `before_id`."""
        if before_id:
            query = {**query, "_id": {"$lt": before_id}}
        return await self.mongo.read_committed(
            lambda: self.collection.find(query).sort("_id", DESCENDING).limit(limit).to_list())
