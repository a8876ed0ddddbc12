"""Demo data: categories and products of deploy/demo/dataset.json, loaded idempotently at start-up."""
from __future__ import annotations

import json
from pathlib import Path

from libs.logging import get_logger
from services.catalog.usecases import Categories, Products

log = get_logger("catalog.demo")
DATASET = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "dataset.json"
DEMO_EPOCH_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: fixed, so reloading writes identical documents


def product_document(product: dict) -> dict:
    """A dataset product as stored, with its SKUs under `skus`."""
    fields = {k: v for k, v in product.items() if k not in ("id", "skus")}
    skus = [{"_id": sku["id"], "product_id": product["id"], "barcode": sku["barcode"],
             "attributes": sku.get("attributes", {}),
             "price": {"base": sku["price"]["base"], "channels": sku["price"].get("channels", {})},
             "cost_price": sku.get("cost_price", 0), "version": 1, "created_at_ms": DEMO_EPOCH_MS}
            for sku in product["skus"]]
    return {"_id": product["id"], **fields, "description": product.get("description", ""), "version": 1,
            "created_at_ms": DEMO_EPOCH_MS, "updated_at_ms": DEMO_EPOCH_MS, "skus": skus}


async def load_demo_data(categories: Categories, products: Products, path: Path = DATASET) -> None:
    dataset = json.loads(path.read_text())
    await categories.seed([{"_id": c["id"], "name": c["name"]} for c in dataset.get("categories", [])])
    await products.seed([product_document(p) for p in dataset.get("products", [])])
    log.info("catalog.demo_loaded", products=len(dataset.get("products", [])))
