"""Demo data: categories and products of deploy/demo/dataset.json, loaded idempotently at start-up."""
from __future__ import annotations

import json
from pathlib import Path

from libs.logging import get_logger

log = get_logger("catalog.demo")
DATASET = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "dataset.json"
DEMO_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: fixed, so reloading writes identical documents


async def load_demo_data(catalog, path: Path = DATASET) -> None:
    dataset = json.loads(path.read_text())

    async def unit(session):
        for category in dataset.get("categories", []):
            await catalog.categories.add_if_missing({"_id": category["id"], "name": category["name"]}, session)
        for product in dataset.get("products", []):
            fields = {k: v for k, v in product.items() if k not in ("id", "skus")}
            # Insert once: a restart never undoes what HQ changed since (prices, status).
            await catalog.products.collection.update_one(
                {"_id": product["id"]},
                {"$setOnInsert": {**fields, "description": product.get("description", ""), "version": 1,
                                  "created_at_ms": DEMO_EPOCH_MS, "updated_at_ms": DEMO_EPOCH_MS}},
                upsert=True, session=session)
            for sku in product["skus"]:
                price = {"base": sku["price"]["base"], "channels": sku["price"].get("channels", {})}
                await catalog.products.skus.update_one(
                    {"_id": sku["id"]},
                    {"$setOnInsert": {"product_id": product["id"], "barcode": sku["barcode"],
                                      "attributes": sku.get("attributes", {}), "price": price,
                                      "cost_price": sku.get("cost_price", 0), "version": 1,
                                      "created_at_ms": DEMO_EPOCH_MS}},
                    upsert=True, session=session)

    await catalog.mongo.transaction(unit)
    log.info("catalog.demo_loaded", products=len(dataset.get("products", [])))
