"""The pass-through's two shapes: a small sized answer is read whole and sent as one plain response, a large or
unsized one is streamed; both keep the same headers (the gateway's own, not the upstream's identity and CORS
headers). And the GC tuning done once the gateway has started."""
from __future__ import annotations

import gc

import pytest
from aiohttp import web

from services.gateway.app import SMALL_BODY_BYTES
from tests.support import free_port, running_app
from tests.integration.gateway.gateway_kit import running_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

UPSTREAM_HEADERS = {"Server": "catalog/1.0", "X-Request-ID": "upstream-id", "Access-Control-Allow-Origin": "*",
                    "ETag": '"v1"', "X-Upstream": "kept"}


@pytest.fixture
def upstream_app() -> web.Application:
    async def small(_: web.Request) -> web.Response:
        return web.Response(body=b'{"id": "prd_1"}', content_type="application/json", headers=UPSTREAM_HEADERS)

    async def large(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * (SMALL_BODY_BYTES + 1), content_type="application/octet-stream",
                            headers=UPSTREAM_HEADERS)

    async def problem(_: web.Request) -> web.Response:
        return web.Response(status=404, body=b'{"type": "https://o2o.example/problems/not-found", "status": 404}',
                            content_type="application/problem+json")

    app = web.Application()
    app.router.add_get("/catalog/products/prd_1", small)
    app.router.add_get("/catalog/products/prd_big", large)
    app.router.add_get("/catalog/products/prd_none", problem)
    return app


@pytest.mark.parametrize("product, length", [("prd_1", len(b'{"id": "prd_1"}')), ("prd_big", SMALL_BODY_BYTES + 1)])
async def test_small_and_large_answers_carry_the_same_headers(jwks_url, http, upstream_app, product, length):
    port = free_port()
    async with running_app(upstream_app, port) as catalog_url, \
            running_gateway(jwks_url, catalog_url=catalog_url) as gateway:
        url = gateway + f"/api/v1/catalog/products/{product}"
        async with http.get(url, headers={"X-Request-ID": "client-id-1"}) as response:
            body = await response.read()
            headers = response.headers
        async with http.head(url) as head:
            head_length = head.headers.get("Content-Length")
            await head.read()
    assert response.status == 200 and len(body) == length
    assert headers["Content-Length"] == str(length) and "Transfer-Encoding" not in headers
    assert headers["X-Request-ID"] == "client-id-1"  # a valid incoming id is kept, the upstream's dropped
    assert headers["Server"] == "o2o-gateway" and "Access-Control-Allow-Origin" not in headers
    assert headers["ETag"] == '"v1"' and headers["X-Upstream"] == "kept"
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    assert head_length == str(length)  # HEAD keeps the upstream's Content-Length


async def test_an_upstream_problem_passes_through_unchanged(jwks_url, http, upstream_app):
    port = free_port()
    async with running_app(upstream_app, port) as catalog_url, \
            running_gateway(jwks_url, catalog_url=catalog_url) as gateway:
        async with http.get(gateway + "/api/v1/catalog/products/prd_none") as response:
            body = await response.json(content_type=None)
            content_type = response.headers["Content-Type"]
    assert response.status == 404 and content_type == "application/problem+json"
    assert body["type"].endswith("/not-found")


async def test_gc_is_frozen_and_gen0_raised_once_started(jwks_url):
    before = gc.get_threshold()
    try:
        async with running_gateway(jwks_url, gc_gen0_threshold=12_345):
            assert gc.get_threshold()[0] == 12_345
            assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
