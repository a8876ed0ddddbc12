"""Oversized body 413 (declared or chunked), malformed JSON 400, oversized URL and headers,
bad paths and internal routes: always a problem+json 4xx, never a 500. Behind the gateway is the real catalog."""
from __future__ import annotations

import pytest

from tests.integration.gateway.gateway_kit import bearer, call, recording_upstream, running_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = 64 * 1024


def assert_problem(answer, status: int, type_suffix: str) -> None:
    got_status, body, headers = answer
    assert got_status == status, answer
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["type"].endswith("/" + type_suffix), body
    assert body["status"] == status and body["title"] and body["detail"]


@pytest.fixture
def admin(signing_key):
    return bearer(signing_key.token(sub="adm_1", roles=("hq_admin",)))


async def test_declared_oversized_body_is_413_before_any_upstream(admin, jwks_url, http):
    async with recording_upstream() as (catalog_url, seen), \
            running_gateway(jwks_url, catalog_url=catalog_url, max_body_bytes=LIMIT) as gateway:
        answer = await call(http, "POST", gateway + "/api/v1/catalog/products", data=b"x" * (LIMIT + 1),
                            headers={**admin, "Content-Type": "application/json"})
        at_limit = await call(http, "POST", gateway + "/api/v1/catalog/products", data=b"y" * LIMIT,
                              headers={**admin, "Content-Type": "application/json"})
    assert_problem(answer, 413, "payload-too-large")
    assert at_limit[0] == 200 and len(seen.requests[0]["body"]) == LIMIT  # exactly the limit passes, untouched
    assert len(seen.requests) == 1


async def test_chunked_oversized_body_is_413(admin, jwks_url, catalog_url, http):
    async def chunks(total: int):
        for _ in range(total // 4096):
            yield b"z" * 4096

    async with running_gateway(jwks_url, catalog_url=catalog_url, max_body_bytes=LIMIT) as gateway:
        answer = await call(http, "POST", gateway + "/api/v1/catalog/products", data=chunks(LIMIT * 4),
                            headers={**admin, "Content-Type": "application/json"})
        small = await call(http, "POST", gateway + "/api/v1/catalog/products",
                           data=_one_chunk(b'{"name": "Green tea", "category": "tees"}'),
                           headers={**admin, "Content-Type": "application/json"})
    assert_problem(answer, 413, "payload-too-large")
    assert small[0] == 201, small  # a small chunked body streams through to the real catalog


async def _one_chunk(data: bytes):
    yield data


async def test_malformed_and_too_deep_json_are_400_from_the_service(admin, jwks_url, catalog_url, http):
    async with running_gateway(jwks_url, catalog_url=catalog_url) as gateway:
        url = gateway + "/api/v1/catalog/products"
        malformed = await call(http, "POST", url, data=b'{"name": "tea",', headers={**admin, "Content-Type": "application/json"})
        empty = await call(http, "POST", url, data=b"", headers={**admin, "Content-Type": "application/json"})
        deep = await call(http, "POST", url, data=b"[" * 100 + b"]" * 100, headers=admin)
        invalid = await call(http, "POST", url, json={"name": "", "category": 7}, headers=admin)
    assert_problem(malformed, 400, "malformed-json")
    assert_problem(empty, 400, "malformed-json")
    assert_problem(deep, 400, "json-too-deep")
    assert_problem(invalid, 422, "validation-error")


async def test_oversized_url_and_headers(jwks_url, http):
    async with running_gateway(jwks_url, max_url_bytes=1024, max_header_bytes=4096) as gateway:
        long_url = await call(http, "GET", gateway + "/api/v1/catalog/products?q=" + "a" * 2000)
        big_header = await call(http, "GET", gateway + "/api/v1/catalog/products", headers={"X-Padding": "b" * 5000})
        many_headers = await call(http, "GET", gateway + "/api/v1/catalog/products",
                                  headers={f"X-Pad-{n}": "c" * 100 for n in range(60)})
    assert_problem(long_url, 414, "uri-too-long")
    assert_problem(big_header, 431, "headers-too-large")
    assert_problem(many_headers, 431, "headers-too-large")


@pytest.mark.parametrize("path", [
    "/api/v1/catalog/internal/quote",
    "/api/v1/stock/internal/reservations",
    "/api/v1/orders/INTERNAL/x",
    "/api/v1/members/%69nternal/members",  # percent-encoded 'i'
    "/api/v1/auth/service/token",  # client credentials of services stay on the internal network
    "/api/v1/nosuchservice/things",
    "/api/v2/catalog/products",
])
async def test_internal_and_unknown_routes_are_404(path, signing_key, jwks_url, http):
    service_token = bearer(signing_key.token(sub="svc_orders", roles=("service",)))
    async with recording_upstream() as (upstream, seen), \
            running_gateway(jwks_url, catalog_url=upstream, stock_url=upstream, orders_url=upstream,
                            membership_url=upstream) as gateway:
        answer = await call(http, "POST", gateway + path, json={}, headers=service_token)
    assert_problem(answer, 404, "not-found")
    assert seen.requests == []


@pytest.mark.parametrize("path", ["/api/v1/catalog/../orders/internal/x", "/api/v1/catalog/%2e%2e/orders/x",
                                  "/api/v1/catalog/products%2Fx"])
async def test_dot_segments_and_encoded_slashes_are_400(path, jwks_url, http):
    async with recording_upstream() as (upstream, seen), running_gateway(jwks_url, catalog_url=upstream) as gateway:
        # yarl would normalise the dots away; send the path exactly as written.
        from yarl import URL
        answer = await call(http, "GET", URL(gateway + path, encoded=True))
    assert_problem(answer, 400, "bad-path")
    assert seen.requests == []


async def test_query_and_encoded_path_reach_the_service_unchanged(jwks_url, http):
    async with recording_upstream() as (upstream, seen), running_gateway(jwks_url, catalog_url=upstream) as gateway:
        from yarl import URL
        answer = await call(http, "GET", URL(gateway + "/api/v1/catalog/products/a%3Fb?category=t%26ea&page=2",
                                             encoded=True))
    assert answer[0] == 200
    assert seen.requests[0]["path"] == "/catalog/products/a?b"  # '?' stayed part of the id, not a query
    assert seen.requests[0]["query"] == {"category": "t&ea", "page": "2"}
