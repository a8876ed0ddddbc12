"""Mongo repositories of catalog: products (with their SKUs), prices, categories, units sold."""
from __future__ import annotations

import re
from typing import Any

from pymongo import ASCENDING, DESCENDING

from libs.mongo import IndexSpec, Mongo, VersionedRepository, insert_versioned, replace_versioned

INDEXES = [
    IndexSpec("products", [("status", ASCENDING)], name="status"),
    IndexSpec("products", [("category", ASCENDING)], name="category"),
    # SKUs live in their own collection: nx cannot index a path inside an array of subdocuments.
    IndexSpec("skus", [("barcode", ASCENDING)], unique=True, name="barcode_unique"),
    IndexSpec("skus", [("product_id", ASCENDING)], name="product"),
    IndexSpec("price_schedules", [("status", ASCENDING), ("effective_at_ms", ASCENDING)], name="status_due"),
    IndexSpec("price_schedules", [("sku_id", ASCENDING)], name="sku"),
    IndexSpec("price_history", [("sku_id", ASCENDING), ("recorded_at_ms", ASCENDING)], name="sku_time"),
    IndexSpec("categories", [("name", ASCENDING)], name="name"),
]


class ProductRepository(VersionedRepository):
    """The product aggregate: the product document plus its SKU documents (written in the same transaction)."""

    name = "products"

    def __init__(self, mongo: Mongo) -> None:
        super().__init__(mongo)
        self.skus = mongo.db["skus"]

    async def many(self, product_ids: list[str]) -> list[dict]:
        return await self.collection.find({"_id": {"$in": product_ids}}).to_list()

    async def add_if_missing(self, doc: dict, session) -> None:
        """Insert once (demo data): a product that exists already keeps what HQ changed since."""
        await _insert_if_missing(self.collection, doc, session)

    async def page(self, *, statuses: list[str], category: str | None, text: str | None, after: str | None,
                   limit: int) -> list[dict]:
        query: dict[str, Any] = {"status": {"$in": statuses}}
        if category:
            query["category"] = category
        if text:
            pattern = {"$regex": re.escape(text), "$options": "i"}
            query["$or"] = [{"name": pattern}, {"brand": pattern}, {"description": pattern}]
        if after:
            query["_id"] = {"$gt": after}
        return await self.collection.find(query).sort("_id", ASCENDING).limit(limit).to_list()

    # -- SKUs of the aggregate ------------------------------------------------------------------
    async def sku(self, sku_id: str, session=None) -> dict | None:
        return await self.skus.find_one({"_id": sku_id}, session=session)

    async def sku_by_code(self, code: str) -> dict | None:
        return await self.skus.find_one({"barcode": code})

    async def skus_of(self, product_ids: list[str], session=None) -> list[dict]:
        return await self.skus.find({"product_id": {"$in": product_ids}}, session=session) \
            .sort("_id", ASCENDING).to_list()

    async def skus_by_id(self, sku_ids: list[str], session=None) -> list[dict]:
        return await self.skus.find({"_id": {"$in": sku_ids}}, session=session).to_list()

    async def barcodes_taken(self, barcodes: list[str], session=None) -> list[str]:
        docs = await self.skus.find({"barcode": {"$in": barcodes}}, session=session).to_list()
        return sorted(doc["barcode"] for doc in docs)

    async def add_sku(self, doc: dict, session) -> None:
        await insert_versioned(self.skus, doc, session)

    async def save_sku(self, doc: dict, session) -> dict:
        return await replace_versioned(self.skus, doc, session)

    async def add_sku_if_missing(self, doc: dict, session) -> None:
        await _insert_if_missing(self.skus, doc, session)


class ScheduleRepository(VersionedRepository):
    """Scheduled price changes: pending until applied, rejected (out of band by then) or cancelled."""

    name = "price_schedules"

    async def pending_for(self, sku_ids: list[str], session=None) -> list[dict]:
        return await self.collection.find({"sku_id": {"$in": sku_ids}, "status": "pending"},
                                          session=session).to_list()

    async def due(self, now_ms: int, limit: int = 200) -> list[dict]:
        return await self.collection.find({"status": "pending", "effective_at_ms": {"$lte": now_ms}}) \
            .sort("effective_at_ms", ASCENDING).limit(limit).to_list()

    async def of_sku(self, sku_id: str) -> list[dict]:
        return await self.collection.find({"sku_id": sku_id}).sort("effective_at_ms", ASCENDING).to_list()


class PriceHistoryRepository:
    """Every price a SKU had: one document per change (a growing list never lives inside the SKU)."""

    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["price_history"]

    async def record(self, entry: dict, session) -> None:
        await self.collection.insert_one(entry, session=session)

    async def of_sku(self, sku_id: str, limit: int = 100) -> list[dict]:
        return await self.collection.find({"sku_id": sku_id}).sort("recorded_at_ms", DESCENDING).limit(limit) \
            .to_list()


class CategoryRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["categories"]

    async def all(self) -> list[dict]:
        return await self.collection.find({}).sort("_id", ASCENDING).to_list()

    async def get(self, category_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": category_id}, session=session)

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one(doc, session=session)

    async def add_if_missing(self, doc: dict, session) -> None:
        await _insert_if_missing(self.collection, doc, session)


class SalesRepository:
    """Units ordered per SKU (popularity), counted from order events."""

    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["sku_sales"]

    async def add_units(self, sku_id: str, units: int, session) -> None:
        await self.collection.update_one({"_id": sku_id}, {"$inc": {"units": units}}, upsert=True, session=session)


async def _insert_if_missing(collection, doc: dict, session) -> None:
    fields = {k: v for k, v in doc.items() if k != "_id"}
    await collection.update_one({"_id": doc["_id"]}, {"$setOnInsert": fields}, upsert=True, session=session)
