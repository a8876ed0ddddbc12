"""HTTP entrypoints of catalog: each one authorises, parses, calls one use case and answers.

Refusals of the use cases (`CatalogError`) are answered as problem+json by the kit's middleware.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from libs.auth import principal_of, require
from libs.http import json_response, parse_body, parse_query
from libs.idempotency import create_once
from libs.openapi import openapi
from libs.service import MONGO
from services.catalog.schemas import (CategoryOut, CategoryPage, NewCategory, NewProduct, NewSku, PriceChange,
                                      PriceOverview, ProductOut, ProductPage, ProductPatch, ProductQuery, QuoteIn,
                                      ScannedSku, ScheduleOut, SkuOut, StatusChange)
from services.catalog.usecases import CATEGORIES, PRICES, PRODUCTS, QUOTES

routes = web.RouteTableDef()
TAGS = ["catalog"]


async def created_once(request: web.Request, create: Callable[[], Awaitable[dict]]) -> web.Response:
    """201 with what `create()` made, made once per `Idempotency-Key` (a retry gets the first answer)."""
    async def answer() -> tuple[int, dict]:
        return 201, await create()

    return await create_once(request.app[MONGO], request, answer)


# --- products --------------------------------------------------------------------------------

@routes.get("/catalog/products")
@openapi(summary="Browse products (shoppers: active only)", query=ProductQuery, response=ProductPage, public=True,
         tags=TAGS)
async def list_products(request: web.Request) -> web.Response:
    query = parse_query(request, ProductQuery)
    page = await request.app[PRODUCTS].browse(principal_of(request), category=query.category, status=query.status,
                                              text=query.q, cursor=query.cursor, limit=query.limit)
    return json_response(page)


@routes.get("/catalog/products/{product_id}")
@openapi(summary="One product with its SKUs and prices", response=ProductOut, public=True, tags=TAGS)
async def get_product(request: web.Request) -> web.Response:
    product = await request.app[PRODUCTS].product(request.match_info["product_id"], principal_of(request))
    return json_response(product)


@routes.post("/catalog/products")
@openapi(summary="Create a product with SKUs (HQ)", request=NewProduct, response=ProductOut, status=201, tags=TAGS)
async def create_product(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, NewProduct)
    return await created_once(request, lambda: request.app[PRODUCTS].create(body.model_dump(), principal.subject))


@routes.patch("/catalog/products/{product_id}")
@openapi(summary="Edit product data (HQ)", request=ProductPatch, response=ProductOut, tags=TAGS)
async def update_product(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    patch = await parse_body(request, ProductPatch)
    product = await request.app[PRODUCTS].edit(request.match_info["product_id"], patch.model_dump(exclude_none=True))
    return json_response(product)


@routes.post("/catalog/products/{product_id}/status")
@openapi(summary="Publish or archive (HQ)", request=StatusChange, response=ProductOut, tags=TAGS)
async def change_status(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, StatusChange)
    product = await request.app[PRODUCTS].change_status(request.match_info["product_id"], body.status)
    return json_response(product)


@routes.post("/catalog/products/{product_id}/skus")
@openapi(summary="Add a SKU (HQ)", request=NewSku, response=SkuOut, status=201, tags=TAGS)
async def add_sku(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, NewSku)
    product_id = request.match_info["product_id"]
    return await created_once(request, lambda: request.app[PRODUCTS].add_sku(product_id, body.model_dump(),
                                                                              principal.subject))


# --- SKUs and prices -------------------------------------------------------------------------

@routes.get("/catalog/skus/by-code/{code}")
@openapi(summary="Scan in store: barcode / QR to SKU, product and price", response=ScannedSku, public=True,
         tags=TAGS)
async def sku_by_code(request: web.Request) -> web.Response:
    return json_response(await request.app[PRODUCTS].scan(request.match_info["code"], principal_of(request)))


@routes.get("/catalog/skus/{sku_id}")
@openapi(summary="One SKU with its product and price", response=ScannedSku, public=True, tags=TAGS)
async def get_sku(request: web.Request) -> web.Response:
    return json_response(await request.app[PRODUCTS].sku(request.match_info["sku_id"], principal_of(request)))


@routes.post("/catalog/skus/{sku_id}/price")
@openapi(summary="Change a price now (200) or at effective_at (202); channel prices stay within the band",
         request=PriceChange, responses={200: SkuOut, 202: ScheduleOut}, tags=TAGS)
async def change_price(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, PriceChange)

    async def create():
        # Under an Idempotency-Key a retried change is answered from the first, not applied (and published) twice.
        answer = await request.app[PRICES].change(request.match_info["sku_id"], body.change(), body.effective_at_ms(),
                                                  actor=principal.subject)
        return (202 if answer.scheduled else 200), answer.view

    return await create_once(request.app[MONGO], request, create)


@routes.get("/catalog/skus/{sku_id}/prices")
@openapi(summary="The price in force, the scheduled changes and the history of a SKU (HQ)",
         response=PriceOverview, tags=TAGS)
async def price_overview(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    return json_response(await request.app[PRICES].overview(request.match_info["sku_id"]))


@routes.post("/catalog/price-schedules/{schedule_id}/cancel")
@openapi(summary="Cancel a scheduled price change that is not yet due (HQ)", response=ScheduleOut, tags=TAGS)
async def cancel_price_schedule(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    return json_response(await request.app[PRICES].cancel_schedule(request.match_info["schedule_id"]))


# --- categories ------------------------------------------------------------------------------

@routes.get("/catalog/categories")
@openapi(summary="Categories", response=CategoryPage, public=True, tags=TAGS)
async def list_categories(request: web.Request) -> web.Response:
    return json_response(await request.app[CATEGORIES].all())


@routes.get("/catalog/categories/{category_id}")
@openapi(summary="One category", response=CategoryOut, public=True, tags=TAGS)
async def get_category(request: web.Request) -> web.Response:
    return json_response(await request.app[CATEGORIES].category(request.match_info["category_id"]))


@routes.post("/catalog/categories")
@openapi(summary="Create a category (HQ)", request=NewCategory, response=CategoryOut, status=201, tags=TAGS)
async def create_category(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, NewCategory)
    return await created_once(request, lambda: request.app[CATEGORIES].create(body.id, body.name))


# --- internal (orders calls it with a service token) ------------------------------------------

@routes.post("/catalog/internal/quote")
async def quote(request: web.Request) -> web.Response:
    require(request, scope="catalog:quote")
    body = await parse_body(request, QuoteIn)
    return json_response(await request.app[QUOTES].quote(body.channel, body.sku_ids))
