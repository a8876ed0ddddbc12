"""The aggregated OpenAPI 3.1 document at /api/docs: assembled from each service's GET /openapi.json (made with
libs.openapi), valid, without internal routes, and tolerant of services that publish nothing."""
from __future__ import annotations

import contextlib
from typing import Literal

import pytest
from aiohttp import web
from openapi_spec_validator import validate
from pydantic import BaseModel, Field

from libs.http import json_response, parse_body
from libs.openapi import add_openapi_route, openapi
from tests.support import free_port, running_app
from tests.integration.gateway.gateway_kit import call, recording_upstream, running_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Line(BaseModel):
    sku_id: str = Field(min_length=1)
    qty: int = Field(ge=1, le=99)


class OrderRequest(BaseModel):
    channel: Literal["app", "mini_program", "marketplace", "store"]
    lines: list[Line] = Field(min_length=1)


class OrderOut(BaseModel):
    id: str
    status: str
    lines: list[Line]


def orders_like_service() -> web.Application:
    """A service as its owner would write it with the kit: pydantic models on the handlers."""
    routes = web.RouteTableDef()

    @routes.post("/orders")
    @openapi(summary="Place an order", request=OrderRequest, responses={201: OrderOut}, tags=["orders"])
    async def place_order(request: web.Request) -> web.Response:
        body = await parse_body(request, OrderRequest)
        return json_response({"id": "ord_1", "status": "placed", "lines": [line.model_dump() for line in body.lines]},
                             status=201)

    @routes.get("/orders/{order_id}")
    @openapi(summary="One order", response=OrderOut)
    async def get_order(request: web.Request) -> web.Response:
        return json_response({"id": request.match_info["order_id"], "status": "placed", "lines": []})

    @routes.post("/orders/internal/expire")
    async def expire(request: web.Request) -> web.Response:
        return json_response({})

    app = web.Application()
    app.add_routes(routes)
    add_openapi_route(app, "Orders")
    return app


@contextlib.asynccontextmanager
async def serve(app: web.Application):
    async with running_app(app, free_port()) as base:
        yield base


async def test_aggregated_spec_is_valid_and_tolerates_services_without_one(jwks_url, http):
    async with serve(orders_like_service()) as orders_url, recording_upstream() as (not_a_spec_url, _), \
            serve(web.Application()) as no_spec_url, \
            running_gateway(jwks_url, orders_url=orders_url, catalog_url=no_spec_url,
                            stock_url=not_a_spec_url) as gateway:
        status, document, headers = await call(http, "GET", gateway + "/api/docs/openapi.json")
        page = await http.get(gateway + "/api/docs")
        html = await page.text()
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    validate(document)  # raises on an invalid OpenAPI 3.1 document
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {"/api/v1/orders", "/api/v1/orders/{order_id}"}  # never the internal route
    place = document["paths"]["/api/v1/orders"]["post"]
    assert place["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/orders.OrderRequest"}
    assert "orders.Line" in document["components"]["schemas"]
    assert place["security"] == [{"bearerAuth": []}]
    assert "customer" in place["x-o2o-roles"]
    # catalog has no spec yet (404), stock answers something that is not OpenAPI, the rest are down.
    assert set(document["x-o2o-missing-services"]) == {"catalog", "stock", "membership", "notifications",
                                                       "settlement"}
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/api/v1/orders/{order_id}" in html and "Place an order" in html
    assert "catalog" in html  # the page says whose spec is missing
    assert "script" not in page.headers["Content-Security-Policy"]


async def test_service_spec_of_a_kit_service(http):
    async with serve(orders_like_service()) as orders_url:
        status, document, _ = await call(http, "GET", orders_url + "/openapi.json")
    assert status == 200
    validate(document)
    assert "/orders/internal/expire" not in document["paths"]
    get_order = document["paths"]["/orders/{order_id}"]["get"]
    assert get_order["parameters"][0] == {"name": "order_id", "in": "path", "required": True,
                                          "schema": {"type": "string", "minLength": 1}}
    assert document["paths"]["/orders"]["post"]["responses"]["default"]["content"]["application/problem+json"]
