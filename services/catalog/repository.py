"""Mongo repository of the product aggregate."""
from __future__ import annotations

from pymongo import ASCENDING

from libs.mongo import ConcurrencyConflict, IndexSpec, Mongo

INDEXES = [
    IndexSpec("products", [("status", ASCENDING)], name="status"),
]


class ProductRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["products"]

    async def get(self, product_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": product_id}, session=session)

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one({**doc, "version": 1}, session=session)

    async def save(self, doc: dict, session) -> None:
        """Replace the aggregate if nobody changed it since it was read (optimistic version)."""
        expected = doc["version"]
        result = await self.collection.replace_one({"_id": doc["_id"], "version": expected},
                                                   {**doc, "version": expected + 1}, session=session)
        if result.matched_count != 1:
            raise ConcurrencyConflict(f"product {doc['_id']} changed concurrently")
