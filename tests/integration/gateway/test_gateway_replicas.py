"""A service with several replicas behind the gateway, over real HTTP: calls spread round-robin, a replica that
refuses connections or fails its readiness probe is skipped, a body-less idempotent call whose replica broke off
goes to another one while a POST is never sent twice, and the breaker counts failed calls, not failed replicas."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.support import eventually, free_port, running_app
from tests.integration.gateway.gateway_kit import DOWN, call, recording_upstream, running_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

PRODUCTS = "/api/v1/catalog/products"
NOT_READY = {("GET", "/readyz"): (503, {"type": "https://o2o.example/problems/not-ready", "title": "Service "
                                        "Unavailable", "status": 503, "detail": "database away"})}


@pytest.fixture
def admin(signing_key):
    return signing_key.admin()


@contextlib.asynccontextmanager
async def breaking_upstream() -> AsyncIterator[tuple[str, list[str]]]:
    """A replica that reads each request and then drops the connection without answering (as a kill -9 does)."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen.append(f"{request.method} {request.path}")
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with running_app(app, free_port()) as base:
        yield base, seen


async def test_calls_are_spread_over_the_replicas(jwks_url, http):
    async with recording_upstream() as (first, first_seen), recording_upstream() as (second, second_seen), \
            running_gateway(jwks_url, catalog_url=f"{first},{second}") as gateway:
        answers = [await call(http, "GET", gateway + PRODUCTS) for _ in range(10)]
    assert [status for status, _, _ in answers] == [200] * 10
    assert first_seen.count("GET", "/catalog/products") == second_seen.count("GET", "/catalog/products") == 5


async def test_a_replica_that_refuses_connections_is_skipped_for_any_method(jwks_url, http, admin):
    async with recording_upstream() as (alive, seen), \
            running_gateway(jwks_url, catalog_url=f"{DOWN},{alive}", upstream_probe_interval_s=0,
                            breaker_failure_threshold=1) as gateway:
        reads = [await call(http, "GET", gateway + PRODUCTS) for _ in range(4)]
        write = await call(http, "POST", gateway + PRODUCTS, json={"name": "tea"}, headers=admin)
        exposition = await (await http.get(gateway.internal + "/metrics")).text()
    assert [status for status, _, _ in reads] == [200] * 4 and write[0] == 200
    assert seen.count("GET", "/catalog/products") == 4 and seen.count("POST", "/catalog/products") == 1
    assert 'o2o_gateway_upstream_retries_total{reason="refused",service="catalog"}' in exposition
    assert 'o2o_gateway_breaker_state{service="catalog"} 0.0' in exposition  # a threshold of 1, still closed


async def test_a_replica_failing_its_readiness_probe_gets_no_calls(jwks_url, http):
    async with recording_upstream(NOT_READY) as (sick, sick_seen), recording_upstream() as (healthy, _), \
            running_gateway(jwks_url, catalog_url=f"{sick},{healthy}", upstream_probe_interval_s=0.1) as gateway:
        await eventually(lambda: sick_seen.count("GET", "/readyz") >= 1)
        await eventually(lambda: _health_reports(http, gateway, sick, "degraded"))
        before = sick_seen.count("GET", "/catalog/products")
        answers = [await call(http, "GET", gateway + PRODUCTS) for _ in range(6)]
    assert [status for status, _, _ in answers] == [200] * 6
    assert sick_seen.count("GET", "/catalog/products") == before  # marked down by the probe: skipped


async def _health_reports(http, gateway: str, replica: str, status: str) -> bool:
    _, health, _ = await call(http, "GET", gateway.internal + "/healthz")
    catalog = health["services"]["catalog"]
    return catalog["replicas"][replica] == status and catalog["status"] == "degraded"


async def test_a_get_is_sent_again_after_a_break_but_a_post_never(jwks_url, http, admin):
    async with breaking_upstream() as (broken, broken_seen), recording_upstream() as (alive, seen), \
            running_gateway(jwks_url, catalog_url=f"{broken},{alive}", upstream_probe_interval_s=0,
                            upstream_down_s=0) as gateway:
        read = await call(http, "GET", gateway + PRODUCTS)  # round-robin starts at the broken replica
        await call(http, "GET", gateway + PRODUCTS)         # (the alive one's turn)
        write = await call(http, "POST", gateway + PRODUCTS, json={"name": "tea"}, headers=admin)
    assert read[0] == 200 and broken_seen[0] == "GET /catalog/products"
    assert write[0] == 503 and write[1]["type"].endswith("/upstream-unavailable")
    assert broken_seen.count("POST /catalog/products") == 1 and seen.count("POST", "/catalog/products") == 0


async def test_the_breaker_counts_calls_that_failed_on_every_replica(jwks_url, http):
    async with running_gateway(jwks_url, catalog_url=f"{DOWN},http://127.0.0.1:{free_port()}",
                               upstream_probe_interval_s=0, breaker_failure_threshold=2,
                               breaker_open_s=3600) as gateway:
        failures = [await call(http, "GET", gateway + PRODUCTS) for _ in range(2)]
        refused = await call(http, "GET", gateway + PRODUCTS)
    assert [status for status, _, _ in failures] == [503, 503]
    assert refused[0] == 503 and "Retry-After" in refused[2] and "paused" in refused[1]["detail"]
