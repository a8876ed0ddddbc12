"""HTTP entrypoints: thin, they parse, call the domain and the repository, and answer."""
from __future__ import annotations

import uuid

from aiohttp import web
from pydantic import BaseModel, Field

from libs.http import json_response, parse_body
from libs.idempotency import guarded
from libs.problems import Problem, not_found
from libs.service import MONGO, OUTBOX
from services.catalog.events import ProductPublished
from services.catalog.repository import ProductRepository

routes = web.RouteTableDef()


class NewProduct(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    category: str = Field(min_length=1, max_length=100)


def _public(doc: dict) -> dict:
    return {"id": doc["_id"], "name": doc["name"], "category": doc["category"], "status": doc["status"],
            "skus": doc.get("skus", [])}


@routes.post("/catalog/products")
async def create_product(request: web.Request) -> web.Response:
    body = await parse_body(request, NewProduct)
    mongo, outbox = request.app[MONGO], request.app[OUTBOX]
    repo = ProductRepository(mongo)

    async def create(remember):
        doc = {"_id": f"prd_{uuid.uuid4().hex[:16]}", "name": body.name, "category": body.category,
               "status": "active", "skus": []}

        async def unit(session):
            await repo.add(doc, session)
            await outbox.record(session, ProductPublished(product_id=doc["_id"], name=doc["name"],
                                                          category=doc["category"], sku_ids=[]), subject=doc["_id"])
            await remember(session, 201, _public(doc))

        await mongo.transaction(unit)
        return 201, _public(doc)

    return await guarded(mongo, request, create)


@routes.get("/catalog/products/{product_id}")
async def get_product(request: web.Request) -> web.Response:
    doc = await ProductRepository(request.app[MONGO]).get(request.match_info["product_id"])
    if doc is None:
        raise not_found("product")
    return json_response(_public(doc))
