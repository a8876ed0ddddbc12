"""What catalog answers, built from stored documents (pure). `schemas.py` documents these shapes."""
from __future__ import annotations

from libs.clock import rfc3339
from services.catalog.domain import model


def price_view(price: dict) -> dict:
    return {"base": price["base"], "channels": dict(price.get("channels", {}))}


def sku_view(doc: dict, price: dict | None = None, internal: bool = False) -> dict:
    """A SKU at `price` (its stored price when not given); the cost price only for HQ and services."""
    view = {"id": doc["_id"], "product_id": doc["product_id"], "barcode": doc["barcode"],
            "attributes": doc.get("attributes", {}), "price": price_view(price or doc["price"])}
    if internal:
        view["cost_price"] = doc.get("cost_price", 0)
    return view


def product_view(doc: dict, skus: list[dict], prices: dict[str, dict], internal: bool = False) -> dict:
    return {"id": doc["_id"], "name": doc["name"], "brand": doc.get("brand", ""), "category": doc["category"],
            "description": doc.get("description", ""), "images": doc.get("images", []), "status": doc["status"],
            "skus": [sku_view(s, prices.get(s["_id"]), internal) for s in skus],
            "created_at": rfc3339(doc.get("created_at_ms")), "updated_at": rfc3339(doc.get("updated_at_ms"))}


def scanned_sku_view(sku: dict, product: dict, price: dict, internal: bool) -> dict:
    """A SKU with its price now and the product it belongs to (what a scan in store shows)."""
    return {**sku_view(sku, price, internal), "sellable": model.is_sellable(product["status"]),
            "product": {"id": product["_id"], "name": product["name"], "brand": product.get("brand", ""),
                        "category": product["category"], "status": product["status"],
                        "images": product.get("images", [])}}


def quote_item(sku: dict, product: dict, price: dict, channel: str) -> dict:
    return {"sku_id": sku["_id"], "product_id": product["_id"], "name": product["name"],
            "category": product["category"], "status": product["status"], "barcode": sku["barcode"],
            "attributes": sku.get("attributes", {}), "unit_price": model.unit_price(price, channel),
            "base_price": price["base"], "cost_price": sku.get("cost_price", 0)}


def schedule_view(doc: dict) -> dict:
    return {"id": doc["_id"], "sku_id": doc["sku_id"], "change": doc["change"], "status": doc["status"],
            "effective_at": rfc3339(doc["effective_at_ms"]), "rejected_because": doc.get("rejected_because")}


def history_view(entry: dict) -> dict:
    return {"before": entry["before"], "after": entry["after"], "how": entry["how"], "actor": entry["actor"],
            "schedule_id": entry.get("schedule_id"), "effective_at": rfc3339(entry["effective_at_ms"]),
            "recorded_at": rfc3339(entry["recorded_at_ms"])}


def category_view(doc: dict) -> dict:
    return {"id": doc["_id"], "name": doc["name"]}
