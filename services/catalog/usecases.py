"""Units of work of catalog: each one transaction that changes state and records its events (outbox)."""
from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from aiohttp import web

from libs.mongo import Mongo
from libs.outbox import Outbox
from services.catalog import metrics
from services.catalog.domain import model
from services.catalog.domain.model import CatalogError
from services.catalog.events import PriceChanged, ProductPublished
from services.catalog.repository import CategoryRepository, PriceRepository, ProductRepository
from services.catalog.settings import CatalogSettings


def now_ms() -> int:
    return int(time.time() * 1000)


def rfc3339_ms(epoch_ms: int | None) -> str | None:
    if epoch_ms is None:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat().replace("+00:00", "Z")


class Catalog:
    def __init__(self, mongo: Mongo, outbox: Outbox, settings: CatalogSettings) -> None:
        self.mongo = mongo
        self.outbox = outbox
        self.settings = settings
        self.products = ProductRepository(mongo)
        self.prices = PriceRepository(mongo)
        self.categories = CategoryRepository(mongo)

    @property
    def band(self) -> float:
        return self.settings.channel_price_band_pct

    # -- products ---------------------------------------------------------------------------------
    async def create_product(self, product: dict, skus: list[dict], actor: str, session) -> tuple[dict, list[dict]]:
        """A product with its SKUs; published at once (event) when created active."""
        if product["status"] == "active" and not skus:
            raise CatalogError("no-skus", "a product needs at least one SKU before it can be sold")
        await self._check_category(product["category"], session)
        await self._check_skus(skus, session)
        if await self.products.get(product["_id"], session) is not None:
            raise CatalogError("product-exists", f"product {product['_id']} already exists", status=409)
        at = now_ms()
        product = {**product, "created_at_ms": at, "updated_at_ms": at}
        await self.products.add(product, session)
        for sku in skus:
            await self.products.add_sku({**sku, "product_id": product["_id"], "created_at_ms": at}, session)
            await self.prices.record(_history(sku, None, sku["price"], at, actor, "created"), session)
        if product["status"] == "active":
            await self._published(product, [s["_id"] for s in skus], session)
        product["version"] = 1
        return product, await self.products.skus_of([product["_id"]], session)

    async def add_sku(self, product_id: str, sku: dict, actor: str, session) -> dict:
        product = await self._product(product_id, session)
        if product["status"] == "archived":
            raise CatalogError("product-archived", "an archived product takes no new SKUs", status=409)
        await self._check_skus([sku], session)
        at = now_ms()
        sku = {**sku, "product_id": product_id, "created_at_ms": at}
        await self.products.add_sku(sku, session)
        await self.prices.record(_history(sku, None, sku["price"], at, actor, "created"), session)
        product["updated_at_ms"] = at
        await self.products.save(product, session)  # bumps the version: the aggregate changed
        return {**sku, "version": 1}

    async def update_product(self, product_id: str, fields: dict, session) -> dict:
        product = await self._product(product_id, session)
        if "category" in fields:
            await self._check_category(fields["category"], session)
        product.update(fields)
        product["updated_at_ms"] = now_ms()
        return await self.products.save(product, session)

    async def change_status(self, product_id: str, target: str, session) -> dict:
        product = await self._product(product_id, session)
        if product["status"] == target:
            return product  # idempotent: asking again for the status it has changes nothing
        model.check_status_change(product["status"], target)
        skus = await self.products.skus_of([product_id], session)
        if target == "active" and not skus:
            raise CatalogError("no-skus", "a product needs at least one SKU before it can be sold", status=409)
        product["status"] = target
        product["updated_at_ms"] = now_ms()
        product = await self.products.save(product, session)
        if target == "active":
            await self._published(product, [s["_id"] for s in skus], session)
        return product

    async def _published(self, product: dict, sku_ids: list[str], session) -> None:
        await self.outbox.record(session, ProductPublished(product_id=product["_id"], name=product["name"],
                                                           category=product["category"], sku_ids=sku_ids),
                                 subject=product["_id"])
        self.mongo.after_commit(metrics.PRODUCTS_PUBLISHED.inc)

    async def _product(self, product_id: str, session) -> dict:
        product = await self.products.get(product_id, session)
        if product is None:
            raise CatalogError("not-found", f"product {product_id} not found", status=404)
        return product

    async def _check_category(self, category: str, session) -> None:
        if await self.categories.get(category, session) is None:
            raise CatalogError("unknown-category", f"category {category!r} does not exist")

    async def _check_skus(self, skus: list[dict], session) -> None:
        model.check_unique_barcodes([s["barcode"] for s in skus])
        ids = [s["_id"] for s in skus]
        if len(set(ids)) != len(ids):
            raise CatalogError("duplicate-sku", "SKU ids repeated in the request")
        for sku in skus:
            model.check_price(sku["price"], self.band)
        taken = await self.products.barcodes_taken([s["barcode"] for s in skus], session)
        if taken:
            raise CatalogError("barcode-taken", f"barcodes already used by another SKU: {', '.join(taken)}",
                               status=409)
        existing = await self.products.skus_by_id(ids, session)
        if existing:
            raise CatalogError("sku-exists", f"SKU ids already exist: {', '.join(sorted(d['_id'] for d in existing))}",
                               status=409)

    # -- prices -----------------------------------------------------------------------------------
    async def change_price(self, sku_id: str, change: dict, effective_at_ms: int | None, actor: str,
                           session) -> tuple[dict, dict | None]:
        """Apply a price change now, or schedule it. Returns (sku, schedule or None)."""
        sku = await self.products.sku(sku_id, session)
        if sku is None:
            raise CatalogError("not-found", f"SKU {sku_id} not found", status=404)
        at = now_ms()
        if effective_at_ms is not None and effective_at_ms > at:
            # Checked now against the price it will meet then (current price plus earlier schedules).
            earlier = [s for s in await self.prices.pending_for([sku_id], session)
                       if s["effective_at_ms"] <= effective_at_ms]
            model.apply_price_change(model.price_in_force(sku["price"], earlier, effective_at_ms, self.band),
                                     change, self.band)
            schedule = {"_id": f"psc_{uuid.uuid4().hex[:16]}", "sku_id": sku_id, "product_id": sku["product_id"],
                        "change": change, "effective_at_ms": effective_at_ms, "status": "pending", "actor": actor,
                        "created_at_ms": at}
            await self.prices.add_schedule(schedule, session)
            return sku, {**schedule, "version": 1}
        sku = await self._apply(sku, change, at, actor, None, session)
        self.mongo.after_commit(metrics.PRICE_CHANGES.labels("immediate").inc)
        return sku, None

    async def cancel_schedule(self, schedule_id: str, session) -> dict:
        schedule = await self.prices.schedules.find_one({"_id": schedule_id}, session=session)
        if schedule is None:
            raise CatalogError("not-found", f"price schedule {schedule_id} not found", status=404)
        if schedule["status"] == "cancelled":
            return schedule  # idempotent
        if schedule["status"] != "pending" or schedule["effective_at_ms"] <= now_ms():
            raise CatalogError("schedule-settled", f"the change is already {schedule['status']} or due", status=409)
        schedule["status"] = "cancelled"
        schedule["settled_at_ms"] = now_ms()
        return await self.prices.save_schedule(schedule, session)

    async def apply_schedule(self, schedule_id: str, session) -> str:
        """Apply one due scheduled change (job). Returns its final status."""
        schedule = await self.prices.schedules.find_one({"_id": schedule_id}, session=session)
        if schedule is None or schedule["status"] != "pending" or schedule["effective_at_ms"] > now_ms():
            return schedule["status"] if schedule else "missing"
        sku = await self.products.sku(schedule["sku_id"], session)
        try:
            await self._apply(sku, schedule["change"], schedule["effective_at_ms"], schedule["actor"], schedule["_id"],
                              session)
            schedule["status"] = "applied"
        except CatalogError as error:
            # The base moved since it was scheduled and this change would now be out of band.
            schedule["status"] = "rejected"
            schedule["rejected_because"] = error.detail
        schedule["settled_at_ms"] = now_ms()
        await self.prices.save_schedule(schedule, session)
        return schedule["status"]

    async def _apply(self, sku: dict, change: dict, effective_at_ms: int, actor: str, schedule_id: str | None,
                     session) -> dict:
        before = sku["price"]
        after = model.apply_price_change(before, change, self.band)
        sku["price"] = after
        sku = await self.products.save_sku(sku, session)
        await self.prices.record(_history(sku, before, after, effective_at_ms, actor, "scheduled" if schedule_id
                                          else "immediate", schedule_id), session)
        await self.outbox.record(session, PriceChanged(
            sku_id=sku["_id"], product_id=sku["product_id"], base=after["base"], channels=after.get("channels", {}),
            previous_base=before["base"], previous_channels=before.get("channels", {}),
            effective_at=datetime.fromtimestamp(effective_at_ms / 1000, UTC), schedule_id=schedule_id),
            subject=sku["_id"])
        return sku

    # -- reads ------------------------------------------------------------------------------------
    async def current_prices(self, skus: list[dict], at_ms: int | None = None) -> dict[str, dict]:
        """Price in force per SKU, honouring scheduled changes that are already due."""
        at_ms = at_ms or now_ms()
        pending = await self.prices.pending_for([s["_id"] for s in skus])
        by_sku: dict[str, list[dict]] = {}
        for schedule in pending:
            by_sku.setdefault(schedule["sku_id"], []).append(schedule)
        return {s["_id"]: model.price_in_force(s["price"], by_sku.get(s["_id"], []), at_ms, self.band) for s in skus}

    async def quote(self, channel: str, sku_ids: list[str]) -> list[dict]:
        skus = {s["_id"]: s for s in await self.products.skus_by_id(sku_ids)}
        products = {p["_id"]: p for p in await self.products.collection.find(
            {"_id": {"$in": sorted({s["product_id"] for s in skus.values()})}}).to_list()}
        not_sellable = [sku_id for sku_id in sku_ids if sku_id not in skus
                        or not model.is_sellable(products.get(skus[sku_id]["product_id"], {}).get("status", ""))]
        if not_sellable:
            raise CatalogError("sku-not-sellable", f"not sellable (unknown or not active): {', '.join(not_sellable)}",
                               sku_ids=not_sellable)
        prices = await self.current_prices(list(skus.values()))
        items = []
        for sku_id in sku_ids:
            sku, product, price = skus[sku_id], products[skus[sku_id]["product_id"]], prices[sku_id]
            items.append({"sku_id": sku_id, "product_id": product["_id"], "name": product["name"],
                          "category": product["category"], "status": product["status"], "barcode": sku["barcode"],
                          "attributes": sku.get("attributes", {}), "unit_price": model.unit_price(price, channel),
                          "base_price": price["base"], "cost_price": sku.get("cost_price", 0)})
        return items


def _history(sku: dict, before: dict | None, after: dict, effective_at_ms: int, actor: str, how: str,
             schedule_id: str | None = None) -> dict:
    return {"_id": f"prh_{uuid.uuid4().hex[:16]}", "sku_id": sku["_id"], "product_id": sku.get("product_id"),
            "before": before, "after": after, "effective_at_ms": effective_at_ms, "recorded_at_ms": now_ms(),
            "actor": actor, "how": how, "schedule_id": schedule_id}


CATALOG = web.AppKey("catalog", Catalog)
