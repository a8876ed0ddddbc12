"""HTTP entrypoints of catalog: thin, they parse, authorise, call a use case in one transaction, answer."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from aiohttp import web
from pymongo.errors import DuplicateKeyError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, field_validator

from libs.auth import principal_of, require
from libs.http import json_response, parse_body, parse_query
from libs.idempotency import guarded
from libs.openapi import openapi
from libs.pagination import decode_cursor, encode_cursor
from libs.problems import Problem, not_found
from services.catalog import metrics
from services.catalog.domain.model import CHANNELS, STATUSES, CatalogError
from services.catalog.schemas import (CategoryOut, CategoryPage, ProductOut, ProductPage, ScannedSku, ScheduleOut,
                                      SkuOut)
from services.catalog.usecases import CATALOG, rfc3339_ms

routes = web.RouteTableDef()

PRODUCT_ID = r"^prd_[A-Za-z0-9_\-]{1,64}$"
SKU_ID = r"^sku_[A-Za-z0-9_\-]{1,100}$"
Fen = Field(gt=0, le=100_000_000, strict=True)  # money is integer fen: "99" or 99.5 are refused


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PriceIn(Strict):
    base: int = Fen
    channels: dict[Literal[CHANNELS], StrictInt] = Field(default_factory=dict)  # type: ignore[valid-type]


class NewSku(Strict):
    id: str | None = Field(None, pattern=SKU_ID)
    barcode: str = Field(min_length=4, max_length=64, pattern=r"^[A-Za-z0-9_\-:.]+$")
    attributes: dict[str, str] = Field(default_factory=dict, max_length=20)
    price: PriceIn
    cost_price: int = Field(0, ge=0, le=100_000_000, strict=True)


class NewProduct(Strict):
    id: str | None = Field(None, pattern=PRODUCT_ID)
    name: str = Field(min_length=1, max_length=200)
    brand: str = Field("", max_length=100)
    category: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=5000)
    images: list[str] = Field(default_factory=list, max_length=20)
    status: Literal["draft", "active"] = "draft"
    skus: list[NewSku] = Field(default_factory=list, max_length=200)


class ProductPatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    brand: str | None = Field(None, max_length=100)
    category: str | None = Field(None, min_length=1, max_length=100)
    description: str | None = Field(None, max_length=5000)
    images: list[str] | None = Field(None, max_length=20)


class StatusChange(Strict):
    status: Literal[STATUSES]  # type: ignore[valid-type]


class PriceChange(Strict):
    base: int | None = Field(None, gt=0, le=100_000_000, strict=True)
    # A channel set to null drops its own price: the channel sells at the base price again.
    channels: dict[Literal[CHANNELS], StrictInt | None] | None = None  # type: ignore[valid-type]
    effective_at: AwareDatetime | None = None

    @field_validator("channels")
    @classmethod
    def positive(cls, value):
        if value and any(v is not None and not 0 < v <= 100_000_000 for v in value.values()):
            raise ValueError("channel prices are positive integers of fen")
        return value


class NewCategory(Strict):
    id: str = Field(pattern=r"^[a-z0-9_\-]{1,50}$")
    name: str = Field(min_length=1, max_length=100)


class QuoteIn(Strict):
    channel: Literal[CHANNELS]  # type: ignore[valid-type]
    sku_ids: list[str] = Field(min_length=1, max_length=200)


class ProductQuery(Strict):
    category: str | None = Field(None, max_length=100)
    status: Literal[STATUSES] | None = None  # type: ignore[valid-type]
    q: str | None = Field(None, min_length=1, max_length=100)
    cursor: str | None = Field(None, max_length=200)
    limit: int = Field(20, ge=1, le=100)


# --- views -----------------------------------------------------------------------------------

def sku_view(doc: dict, price: dict | None = None, internal: bool = False) -> dict:
    view = {"id": doc["_id"], "product_id": doc["product_id"], "barcode": doc["barcode"],
            "attributes": doc.get("attributes", {}), "price": _price_view(price or doc["price"])}
    if internal:
        view["cost_price"] = doc.get("cost_price", 0)
    return view


def _price_view(price: dict) -> dict:
    return {"base": price["base"], "channels": dict(price.get("channels", {}))}


def product_view(doc: dict, skus: list[dict], prices: dict[str, dict], internal: bool = False) -> dict:
    return {"id": doc["_id"], "name": doc["name"], "brand": doc.get("brand", ""), "category": doc["category"],
            "description": doc.get("description", ""), "images": doc.get("images", []), "status": doc["status"],
            "skus": [sku_view(s, prices.get(s["_id"]), internal) for s in skus],
            "created_at": rfc3339_ms(doc.get("created_at_ms")), "updated_at": rfc3339_ms(doc.get("updated_at_ms"))}


def is_staff(request: web.Request) -> bool:
    principal = principal_of(request)
    return principal is not None and principal.is_admin


def catalog_problem(error: CatalogError) -> Problem:
    if error.code == "price-out-of-band":
        metrics.PRICE_REJECTIONS.labels("out-of-band").inc()
    return Problem(error.status, error.code, error.detail, **error.extensions)



async def _with_skus(request: web.Request, doc: dict) -> dict:
    catalog = request.app[CATALOG]
    skus = await catalog.products.skus_of([doc["_id"]])
    return product_view(doc, skus, await catalog.current_prices(skus), internal=is_staff(request))


async def _run(catalog, unit):
    try:
        return await catalog.mongo.transaction(unit)
    except CatalogError as error:
        raise catalog_problem(error) from None
    except DuplicateKeyError:
        # Two requests raced for the same barcode or id (the checks passed for both; the unique index decided).
        raise Problem(409, "already-exists", "a product, SKU or barcode in this request was just created by "
                                             "another request") from None


# --- products --------------------------------------------------------------------------------

@routes.get("/catalog/products")
@openapi(summary="Browse products (shoppers: active only)", query=ProductQuery, response=ProductPage, public=True, tags=["catalog"])
async def list_products(request: web.Request) -> web.Response:
    """Browse: shoppers see what is on sale (active); HQ may filter any status."""
    query = parse_query(request, ProductQuery)
    catalog = request.app[CATALOG]
    if is_staff(request):
        statuses = [query.status] if query.status else list(STATUSES)
    else:
        statuses = ["active"] if query.status in (None, "active") else []
    docs = await catalog.products.page(statuses=statuses, category=query.category, text=query.q,
                                       after=decode_cursor(query.cursor), limit=query.limit + 1) if statuses else []
    more = len(docs) > query.limit
    docs = docs[:query.limit]
    skus = await catalog.products.skus_of([d["_id"] for d in docs]) if docs else []
    prices = await catalog.current_prices(skus) if skus else {}
    by_product: dict[str, list[dict]] = {}
    for sku in skus:
        by_product.setdefault(sku["product_id"], []).append(sku)
    items = [product_view(d, by_product.get(d["_id"], []), prices, is_staff(request)) for d in docs]
    return json_response({"items": items, "next_cursor": encode_cursor(docs[-1]["_id"]) if more else None})


@routes.get("/catalog/products/{product_id}")
@openapi(summary="One product with its SKUs and prices", response=ProductOut, public=True, tags=["catalog"])
async def get_product(request: web.Request) -> web.Response:
    doc = await request.app[CATALOG].products.get(request.match_info["product_id"])
    if doc is None or (doc["status"] == "draft" and not is_staff(request)):
        raise not_found("product")
    return json_response(await _with_skus(request, doc))


@routes.post("/catalog/products")
@openapi(summary="Create a product with SKUs (HQ)", request=NewProduct, response=ProductOut, status=201, tags=["catalog"])
async def create_product(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, NewProduct)
    catalog = request.app[CATALOG]

    async def create(remember):
        product = {"_id": body.id or f"prd_{uuid.uuid4().hex[:16]}",
                   **body.model_dump(exclude={"id", "skus"})}
        skus = [{"_id": s.id or f"sku_{uuid.uuid4().hex[:16]}", **s.model_dump(exclude={"id"})} for s in body.skus]

        async def unit(session):
            doc, sku_docs = await catalog.create_product(product, skus, principal.subject, session)
            view = product_view(doc, sku_docs, {}, internal=True)
            await remember(session, 201, view)
            return view

        return 201, await _run(catalog, unit)

    return await guarded(catalog.mongo, request, create)


@routes.patch("/catalog/products/{product_id}")
@openapi(summary="Edit product data (HQ)", request=ProductPatch, response=ProductOut, tags=["catalog"])
async def update_product(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    patch = await parse_body(request, ProductPatch)
    catalog = request.app[CATALOG]
    doc = await _run(catalog, lambda s: catalog.update_product(request.match_info["product_id"],
                                                               patch.model_dump(exclude_none=True), s))
    return json_response(await _with_skus(request, doc))


@routes.post("/catalog/products/{product_id}/status")
@openapi(summary="Publish or archive (HQ)", request=StatusChange, response=ProductOut, tags=["catalog"])
async def change_status(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, StatusChange)
    catalog = request.app[CATALOG]
    doc = await _run(catalog, lambda s: catalog.change_status(request.match_info["product_id"], body.status, s))
    return json_response(await _with_skus(request, doc))


@routes.post("/catalog/products/{product_id}/skus")
@openapi(summary="Add a SKU (HQ)", request=NewSku, response=SkuOut, status=201, tags=["catalog"])
async def add_sku(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, NewSku)
    catalog = request.app[CATALOG]

    async def create(remember):
        sku = {"_id": body.id or f"sku_{uuid.uuid4().hex[:16]}", **body.model_dump(exclude={"id"})}

        async def unit(session):
            doc = await catalog.add_sku(request.match_info["product_id"], sku, principal.subject, session)
            view = sku_view(doc, internal=True)
            await remember(session, 201, view)
            return view

        return 201, await _run(catalog, unit)

    return await guarded(catalog.mongo, request, create)


# --- SKUs and prices -------------------------------------------------------------------------

async def _sku_with_product(request: web.Request, sku: dict | None) -> dict:
    catalog = request.app[CATALOG]
    product = await catalog.products.get(sku["product_id"]) if sku else None
    if sku is None or product is None or (product["status"] == "draft" and not is_staff(request)):
        raise not_found("SKU")
    price = (await catalog.current_prices([sku]))[sku["_id"]]
    return {**sku_view(sku, price, is_staff(request)), "sellable": product["status"] == "active",
            "product": {"id": product["_id"], "name": product["name"], "brand": product.get("brand", ""),
                        "category": product["category"], "status": product["status"],
                        "images": product.get("images", [])}}


@routes.get("/catalog/skus/by-code/{code}")
@openapi(summary="Scan in store: barcode / QR to SKU, product and price", response=ScannedSku, public=True, tags=["catalog"])
async def sku_by_code(request: web.Request) -> web.Response:
    """A scan in store: barcode or QR payload to the SKU, its product and its price now."""
    code = request.match_info["code"]
    sku = await request.app[CATALOG].products.sku_by_code(code) if 0 < len(code) <= 64 else None
    try:
        view = await _sku_with_product(request, sku)
    except Problem:
        metrics.SCANS.labels("not_found").inc()
        raise
    metrics.SCANS.labels("found").inc()
    return json_response(view)


@routes.get("/catalog/skus/{sku_id}")
@openapi(summary="One SKU with its product and price", response=ScannedSku, public=True, tags=["catalog"])
async def get_sku(request: web.Request) -> web.Response:
    sku = await request.app[CATALOG].products.sku(request.match_info["sku_id"])
    return json_response(await _sku_with_product(request, sku))


@routes.post("/catalog/skus/{sku_id}/price")
@openapi(summary="Change a price now (200) or at effective_at (202); channel prices stay within the band", request=PriceChange, responses={200: SkuOut, 202: ScheduleOut}, tags=["catalog"])
async def change_price(request: web.Request) -> web.Response:
    """Change a SKU's price now, or at `effective_at` (202 with the schedule)."""
    principal = require(request, "hq_admin")
    body = await parse_body(request, PriceChange)
    if body.base is None and body.channels is None:
        raise Problem(422, "validation-error", "give a new base, channel prices, or both")
    catalog = request.app[CATALOG]
    change = body.model_dump(include={"base", "channels"}, exclude_none=True)
    if body.channels is not None:
        change["channels"] = dict(body.channels)
    effective_ms = int(body.effective_at.timestamp() * 1000) if body.effective_at else None

    async def create(remember):
        # Under an Idempotency-Key a retried change is answered from the first, not applied (and published) twice.
        async def unit(session):
            sku, schedule = await catalog.change_price(request.match_info["sku_id"], change, effective_ms,
                                                       principal.subject, session)
            answer = (202, schedule_view(schedule)) if schedule is not None else (200, sku_view(sku, internal=True))
            await remember(session, *answer)
            return answer

        return await _run(catalog, unit)

    return await guarded(catalog.mongo, request, create)


def schedule_view(doc: dict) -> dict:
    return {"id": doc["_id"], "sku_id": doc["sku_id"], "change": doc["change"], "status": doc["status"],
            "effective_at": rfc3339_ms(doc["effective_at_ms"]), "rejected_because": doc.get("rejected_because")}


@routes.get("/catalog/skus/{sku_id}/prices")
async def price_overview(request: web.Request) -> web.Response:
    """HQ: the price in force, the scheduled changes and the history of one SKU."""
    require(request, "hq_admin")
    catalog = request.app[CATALOG]
    sku = await catalog.products.sku(request.match_info["sku_id"])
    if sku is None:
        raise not_found("SKU")
    current = (await catalog.current_prices([sku]))[sku["_id"]]
    history = [{"before": h["before"], "after": h["after"], "how": h["how"], "actor": h["actor"],
                "schedule_id": h.get("schedule_id"), "effective_at": rfc3339_ms(h["effective_at_ms"]),
                "recorded_at": rfc3339_ms(h["recorded_at_ms"])} for h in await catalog.prices.history_of(sku["_id"])]
    return json_response({"sku_id": sku["_id"], "current": _price_view(current),
                          "scheduled": [schedule_view(s) for s in await catalog.prices.schedules_of(sku["_id"])],
                          "history": history})


@routes.post("/catalog/price-schedules/{schedule_id}/cancel")
@openapi(summary="Cancel a scheduled price change that is not yet due (HQ)", response=ScheduleOut, tags=["catalog"])
async def cancel_price_schedule(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    catalog = request.app[CATALOG]
    schedule = await _run(catalog, lambda s: catalog.cancel_schedule(request.match_info["schedule_id"], s))
    return json_response(schedule_view(schedule))


# --- categories ------------------------------------------------------------------------------

@routes.get("/catalog/categories")
@openapi(summary="Categories", response=CategoryPage, public=True, tags=["catalog"])
async def list_categories(request: web.Request) -> web.Response:
    docs = await request.app[CATALOG].categories.all()
    return json_response({"items": [{"id": d["_id"], "name": d["name"]} for d in docs], "next_cursor": None})


@routes.get("/catalog/categories/{category_id}")
@openapi(summary="One category", response=CategoryOut, public=True, tags=["catalog"])
async def get_category(request: web.Request) -> web.Response:
    doc = await request.app[CATALOG].categories.get(request.match_info["category_id"])
    if doc is None:
        raise not_found("category")
    return json_response({"id": doc["_id"], "name": doc["name"]})


@routes.post("/catalog/categories")
@openapi(summary="Create a category (HQ)", request=NewCategory, response=CategoryOut, status=201, tags=["catalog"])
async def create_category(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, NewCategory)
    catalog = request.app[CATALOG]

    async def create(remember):
        async def unit(session):
            if await catalog.categories.get(body.id, session) is not None:
                raise Problem(409, "category-exists", f"category {body.id} already exists")
            await catalog.categories.add_if_missing({"_id": body.id, "name": body.name}, session)
            await remember(session, 201, body.model_dump())

        await catalog.mongo.transaction(unit)
        return 201, body.model_dump()

    return await guarded(catalog.mongo, request, create)


# --- internal (orders calls it with a service token) ------------------------------------------

@routes.post("/catalog/internal/quote")
async def quote(request: web.Request) -> web.Response:
    require(request, "service")
    body = await parse_body(request, QuoteIn)
    try:
        items = await request.app[CATALOG].quote(body.channel, list(dict.fromkeys(body.sku_ids)))
    except CatalogError as error:
        metrics.QUOTES.labels("not_sellable").inc()
        raise catalog_problem(error) from None
    metrics.QUOTES.labels("ok").inc()
    by_id = {item["sku_id"]: item for item in items}
    return json_response({"channel": body.channel, "items": [by_id[s] for s in body.sku_ids],
                          "quoted_at": datetime.now(UTC).isoformat().replace("+00:00", "Z")})
