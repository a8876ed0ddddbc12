"""Products: the product aggregate (a product and its SKUs), from draft to active to archived, and its reads."""
from __future__ import annotations

from aiohttp import web

from libs.clock import now_ms
from libs.ids import new_id
from libs.mongo import Mongo, refuse_duplicates
from libs.outbox import Outbox
from libs.pagination import decode_cursor, page_of
from libs.principal import Principal
from libs.refusal import CONFLICT
from services.catalog import metrics
from services.catalog.domain import model
from services.catalog.domain.model import CatalogError
from services.catalog.events import ProductPublished
from services.catalog.repository import CategoryRepository, PriceHistoryRepository, ProductRepository
from services.catalog.settings import CatalogSettings
from services.catalog.usecases.base import UseCase
from services.catalog.usecases.prices import Prices
from services.catalog.views import product_view, scanned_sku_view, sku_view

CURSOR_SCOPE = "catalog.products"
# Two requests raced for the same id or barcode: both passed the checks, the unique index decided.
RACE_LOST = "a product, SKU or barcode in this request was just created by another request"


def _is_staff(viewer: Principal | None) -> bool:
    return viewer is not None and viewer.is_admin


def _without(doc: dict, *keys: str) -> dict:
    return {k: v for k, v in doc.items() if k not in keys}


class Products(UseCase):
    def __init__(self, mongo: Mongo, outbox: Outbox, settings: CatalogSettings, *, prices: Prices) -> None:
        super().__init__(mongo, outbox, settings)
        self.products = ProductRepository(mongo)
        self.categories = CategoryRepository(mongo)
        self.history = PriceHistoryRepository(mongo)
        self.prices = prices

    # -- reads ------------------------------------------------------------------------------------
    async def browse(self, viewer: Principal | None, *, category: str | None, status: str | None,
                     text: str | None, cursor: str | None, limit: int) -> dict:
        """A page of products with their SKUs at today's prices; shoppers see what is on sale only."""
        statuses = model.visible_statuses(status, _is_staff(viewer))
        if not statuses:
            return {"items": [], "next_cursor": None}
        docs = await self.products.page(statuses=statuses, category=category, text=text,
                                        after=decode_cursor(cursor, CURSOR_SCOPE), limit=limit + 1)
        skus = await self.products.skus_of([d["_id"] for d in docs[:limit]]) if docs else []
        prices = await self.prices.in_force(skus)
        by_product: dict[str, list[dict]] = {}
        for sku in skus:
            by_product.setdefault(sku["product_id"], []).append(sku)
        return page_of(docs, limit, scope=CURSOR_SCOPE, view=lambda d: product_view(
            d, by_product.get(d["_id"], []), prices, _is_staff(viewer)))

    async def product(self, product_id: str, viewer: Principal | None) -> dict:
        doc = await self.products.get(product_id)
        if doc is None or not model.is_visible(doc["status"], _is_staff(viewer)):
            raise model.missing("product")
        return await self._with_skus(doc, _is_staff(viewer))

    async def sku(self, sku_id: str, viewer: Principal | None) -> dict:
        """One SKU with its product and its price now."""
        return await self._scanned(await self.products.sku(sku_id), viewer)

    async def scan(self, code: str, viewer: Principal | None) -> dict:
        """A scan in store: a barcode or QR payload to the SKU, its product and its price now."""
        sku = await self.products.sku_by_code(code) if 0 < len(code) <= 64 else None
        try:
            view = await self._scanned(sku, viewer)
        except CatalogError:
            metrics.SCANS.labels("not_found").inc()
            raise
        metrics.SCANS.labels("found").inc()
        return view

    # -- writes -----------------------------------------------------------------------------------
    async def create(self, draft: dict, actor: str) -> dict:
        """A product with its SKUs (ids given or made here); published at once (event) when created active."""
        product = {"_id": draft.get("id") or new_id("prd"), **_without(draft, "id", "skus")}
        skus = [self._new_sku(s) for s in draft.get("skus", [])]

        async def unit(session) -> dict:
            if product["status"] == "active" and not skus:
                raise CatalogError("no-skus", "a product needs at least one SKU before it can be sold")
            await self._check_category(product["category"], session)
            await self._check_skus(skus, session)
            if await self.products.get(product["_id"], session) is not None:
                raise CatalogError("product-exists", f"product {product['_id']} already exists", kind=CONFLICT)
            at = now_ms()
            saved = {**product, "created_at_ms": at, "updated_at_ms": at}
            await self.products.add(saved, session)
            for sku in skus:
                await self._add_sku({**sku, "product_id": product["_id"]}, at, actor, session)
            if product["status"] == "active":
                await self._published(saved, [s["_id"] for s in skus], session)
            return product_view(saved, await self.products.skus_of([product["_id"]], session), {}, internal=True)

        with refuse_duplicates("already-exists", RACE_LOST):
            return await self.unit_of_work(unit)

    async def add_sku(self, product_id: str, draft: dict, actor: str) -> dict:
        sku = {**self._new_sku(draft), "product_id": product_id}

        async def unit(session) -> dict:
            product = await self._product(product_id, session)
            if product["status"] == "archived":
                raise CatalogError("product-archived", "an archived product takes no new SKUs", kind=CONFLICT)
            await self._check_skus([sku], session)
            at = now_ms()
            saved = await self._add_sku(sku, at, actor, session)
            await self.products.save({**product, "updated_at_ms": at}, session)  # the aggregate changed: new version
            return sku_view(saved, internal=True)

        with refuse_duplicates("already-exists", RACE_LOST):
            return await self.unit_of_work(unit)

    async def edit(self, product_id: str, fields: dict) -> dict:
        async def unit(session) -> dict:
            product = await self._product(product_id, session)
            if "category" in fields:
                await self._check_category(fields["category"], session)
            return await self.products.save({**product, **fields, "updated_at_ms": now_ms()}, session)

        return await self._with_skus(await self.unit_of_work(unit), staff=True)

    async def change_status(self, product_id: str, target: str) -> dict:
        """Publish (active) or archive; asking again for the status it has changes nothing."""
        async def unit(session) -> dict:
            product = await self._product(product_id, session)
            if product["status"] == target:
                return product
            model.check_status_change(product["status"], target)
            skus = await self.products.skus_of([product_id], session)
            if target == "active" and not skus:
                raise CatalogError("no-skus", "a product needs at least one SKU before it can be sold", kind=CONFLICT)
            product = await self.products.save({**product, "status": target, "updated_at_ms": now_ms()}, session)
            if target == "active":
                await self._published(product, [s["_id"] for s in skus], session)
            return product

        return await self._with_skus(await self.unit_of_work(unit), staff=True)

    async def seed(self, catalogue: list[dict]) -> None:
        """Insert the products (each with its `skus`) that are missing (demo data): a restart never undoes
        what HQ changed since (prices, status)."""
        async def unit(session) -> None:
            for product in catalogue:
                await self.products.add_if_missing(_without(product, "skus"), session)
                for sku in product["skus"]:
                    await self.products.add_sku_if_missing(sku, session)

        await self.unit_of_work(unit)

    # -- helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _new_sku(draft: dict) -> dict:
        return {"_id": draft.get("id") or new_id("sku"), **_without(draft, "id")}

    async def _with_skus(self, doc: dict, staff: bool) -> dict:
        skus = await self.products.skus_of([doc["_id"]])
        return product_view(doc, skus, await self.prices.in_force(skus), internal=staff)

    async def _scanned(self, sku: dict | None, viewer: Principal | None) -> dict:
        product = await self.products.get(sku["product_id"]) if sku else None
        if sku is None or product is None or not model.is_visible(product["status"], _is_staff(viewer)):
            raise model.missing("SKU")
        price = (await self.prices.in_force([sku]))[sku["_id"]]
        return scanned_sku_view(sku, product, price, _is_staff(viewer))

    async def _product(self, product_id: str, session) -> dict:
        product = await self.products.get(product_id, session)
        if product is None:
            raise model.missing(f"product {product_id}")
        return product

    async def _add_sku(self, sku: dict, at: int, actor: str, session) -> dict:
        """A new SKU of the aggregate; its first price opens its price history."""
        saved = {**sku, "created_at_ms": at}
        await self.products.add_sku(saved, session)
        await self.history.record(model.history_entry(saved, None, saved["price"], at, actor, "created"), session)
        return {**saved, "version": 1}

    async def _published(self, product: dict, sku_ids: list[str], session) -> None:
        await self.outbox.record(session, ProductPublished(product_id=product["_id"], name=product["name"],
                                                           category=product["category"], sku_ids=sku_ids),
                                 subject=product["_id"])
        self.mongo.after_commit(metrics.PRODUCTS_PUBLISHED.inc)

    async def _check_category(self, category: str, session) -> None:
        if await self.categories.get(category, session) is None:
            raise CatalogError("unknown-category", f"category {category!r} does not exist")

    async def _check_skus(self, skus: list[dict], session) -> None:
        """New SKUs: barcodes and ids unique in the request and in the catalogue, prices within the band."""
        model.check_unique_barcodes([s["barcode"] for s in skus])
        ids = [s["_id"] for s in skus]
        if len(set(ids)) != len(ids):
            raise CatalogError("duplicate-sku", "SKU ids repeated in the request")
        for sku in skus:
            model.check_price(sku["price"], self.band)
        taken = await self.products.barcodes_taken([s["barcode"] for s in skus], session)
        if taken:
            raise CatalogError("barcode-taken", f"barcodes already used by another SKU: {', '.join(taken)}",
                               kind=CONFLICT)
        existing = await self.products.skus_by_id(ids, session)
        if existing:
            raise CatalogError("sku-exists", f"SKU ids already exist: {', '.join(sorted(d['_id'] for d in existing))}",
                               kind=CONFLICT)


PRODUCTS = web.AppKey("products", Products)
