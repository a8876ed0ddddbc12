"""Upstream timeouts, the circuit breaker per upstream, CORS and security headers, over real HTTP."""
from __future__ import annotations

import pytest

from tests.support import eventually
from tests.integration.gateway.gateway_kit import (ROOMY_LOGIN_LIMITS, bearer, call, recording_upstream,
                                                   running_gateway)

pytestmark = pytest.mark.asyncio(loop_scope="module")

APP_ORIGIN = "https://app.o2o.example"


async def test_an_upstream_that_does_not_answer_is_504(jwks_url, http):
    async with recording_upstream(hang_paths=frozenset({"/catalog/products"})) as (catalog_url, _), \
            running_gateway(jwks_url, catalog_url=catalog_url, upstream_timeout_s=1.5) as gateway:
        answer = await call(http, "GET", gateway + "/api/v1/catalog/products")
        other_route = await call(http, "GET", gateway + "/api/v1/catalog/products/prd_1")
    assert answer[0] == 504 and answer[1]["type"].endswith("/upstream-timeout")
    assert other_route[0] == 200  # one slow route does not stop the others


async def test_route_timeout_from_the_policy_table_overrides_the_default(jwks_url, http):
    """GET /stock/availability is a user-facing lookup: 5 s at most, even when the default allows a minute."""
    async with recording_upstream(hang_paths=frozenset({"/stock/availability"})) as (stock_url, _), \
            running_gateway(jwks_url, stock_url=stock_url, upstream_timeout_s=60) as gateway:
        answer = await call(http, "GET", gateway + "/api/v1/stock/availability?sku=sku_1&lat=31.2&lng=121.4")
    assert answer[0] == 504 and answer[1]["type"].endswith("/upstream-timeout")


async def test_breaker_opens_after_failures_and_answers_503_with_retry_after(jwks_url, http):
    sick = {("GET", "/stock/availability"): (503, {"type": "https://o2o.example/problems/not-ready",
                                                  "title": "Service Unavailable", "status": 503, "detail": "down"})}
    async with recording_upstream(sick) as (stock_url, seen), \
            running_gateway(jwks_url, stock_url=stock_url, breaker_failure_threshold=3, breaker_open_s=3600) as gateway:
        url = gateway + "/api/v1/stock/availability?sku=sku_1&lat=31.2&lng=121.4"
        failures = [await call(http, "GET", url) for _ in range(3)]
        refused = await call(http, "GET", url)
        also_refused = await call(http, "GET", gateway + "/api/v1/stock/locations")
        exposition = await (await http.get(gateway.internal + "/metrics")).text()
        health = await call(http, "GET", gateway.internal + "/healthz")
    assert [f[0] for f in failures] == [503, 503, 503]
    assert seen.count("GET", "/stock/availability") == 3  # once open, nothing more reaches the sick service
    assert refused[0] == 503 and "paused" in refused[1]["detail"]
    assert int(refused[2]["Retry-After"]) > 3000
    assert also_refused[0] == 503
    assert 'o2o_gateway_breaker_state{service="stock"} 2.0' in exposition
    assert health[1]["services"]["stock"]["breaker"] == "open"


async def test_failing_logins_open_only_the_login_breaker_of_membership(jwks_url, http):
    """Staff logins that time out (membership hashing a flood of passwords) pause staff login only: JWKS,
    member routes and the rest of membership keep answering."""
    async with recording_upstream(hang_paths=frozenset({"/auth/staff/token"})) as (membership_url, seen), \
            running_gateway(jwks_url, membership_url=membership_url, upstream_timeout_s=0.5,
                            breaker_failure_threshold=3, breaker_open_s=3600, **ROOMY_LOGIN_LIMITS) as gateway:
        logins = [await call(http, "POST", gateway + "/api/v1/auth/staff/token",
                             json={"username": f"u{n}", "password": "x"}) for n in range(4)]
        jwks = await call(http, "GET", gateway + "/api/v1/auth/jwks")
        refresh = await call(http, "POST", gateway + "/api/v1/auth/token/refresh", json={"refresh_token": "r"})
        health = await call(http, "GET", gateway.internal + "/healthz")
    assert [a[0] for a in logins[:3]] == [504] * 3
    assert logins[3][0] == 503 and "paused" in logins[3][1]["detail"]
    assert seen.count("POST", "/auth/staff/token") == 3
    assert jwks[0] == 200 and refresh[0] == 200
    assert health[1]["services"]["membership"]["breaker"] == "closed"


async def test_breaker_half_open_trial_closes_it_again(jwks_url, http):
    down = (503, {"type": "https://o2o.example/problems/not-ready", "title": "Service Unavailable", "status": 503,
                  "detail": "down"})
    answers = {("GET", "/stock/locations"): down}
    async with recording_upstream(answers) as (stock_url, seen), \
            running_gateway(jwks_url, stock_url=stock_url, breaker_failure_threshold=2, breaker_open_s=2) as gateway:
        url = gateway + "/api/v1/stock/locations"
        first = [await call(http, "GET", url) for _ in range(2)]
        refused = await call(http, "GET", url)
        answers.clear()  # the service recovers
        await eventually(lambda: _ok(http, url), timeout=10)
        exposition = await (await http.get(gateway.internal + "/metrics")).text()
    assert [f[0] for f in first] == [503, 503]
    assert refused[0] == 503 and "paused" in refused[1]["detail"]
    assert 'o2o_gateway_breaker_state{service="stock"} 0.0' in exposition
    assert seen.count("GET", "/stock/locations") == 3  # two failures, then the one trial that closed it


async def _ok(http, url: str) -> bool:
    status, _, _ = await call(http, "GET", url)
    return status == 200


async def test_cors_preflight_and_simple_requests(jwks_url, http):
    async with recording_upstream() as (catalog_url, seen), \
            running_gateway(jwks_url, catalog_url=catalog_url, cors_origins=[APP_ORIGIN]) as gateway:
        url = gateway + "/api/v1/catalog/products"
        preflight = await call(http, "OPTIONS", url, headers={
            "Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"})
        foreign = await call(http, "OPTIONS", url, headers={"Origin": "https://evil.example",
                                                            "Access-Control-Request-Method": "POST"})
        odd_header = await call(http, "OPTIONS", url, headers={"Origin": APP_ORIGIN,
                                                               "Access-Control-Request-Method": "GET",
                                                               "Access-Control-Request-Headers": "x-admin-override"})
        simple = await call(http, "GET", url, headers={"Origin": APP_ORIGIN})
        simple_foreign = await call(http, "GET", url, headers={"Origin": "https://evil.example"})
    status, _, headers = preflight
    assert status == 204
    assert "POST" in headers["Access-Control-Allow-Methods"]
    assert "idempotency-key" in headers["Access-Control-Allow-Headers"]
    assert headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert foreign[0] == 403 and "Access-Control-Allow-Origin" not in foreign[2]
    assert odd_header[0] == 403
    assert simple[0] == 200 and simple[2]["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "Origin" in simple[2].getall("Vary")
    assert simple_foreign[0] == 200 and "Access-Control-Allow-Origin" not in simple_foreign[2]
    assert len(seen.requests) == 2  # preflights never reach a service


async def test_security_headers_on_pass_through_and_on_problems(jwks_url, http):
    leaky = {("GET", "/catalog/products"): (200, {"items": [], "next_cursor": None})}
    async with recording_upstream(leaky) as (catalog_url, _), \
            running_gateway(jwks_url, catalog_url=catalog_url) as gateway:
        proxied = await call(http, "GET", gateway + "/api/v1/catalog/products")
        problem = await call(http, "GET", gateway + "/api/v1/orders/ord_1")  # 401
        exposition = await (await http.get(gateway.internal + "/metrics")).text()
    assert 'o2o_gateway_upstream_duration_seconds_count{outcome="ok",service="catalog"}' in exposition
    assert 'o2o_gateway_auth_failures_total{reason="unauthorized"}' in exposition
    for status, _, headers in (proxied, problem):
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert "max-age=" in headers["Strict-Transport-Security"]
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["Server"] == "o2o-gateway"  # no framework or version disclosure
        assert headers["X-Request-ID"]
    assert proxied[0] == 200 and problem[0] == 401


async def test_request_id_is_kept_or_minted_and_reaches_the_service(signing_key, jwks_url, http):
    async with recording_upstream() as (orders_url, seen), running_gateway(jwks_url, orders_url=orders_url) as gateway:
        given = await call(http, "GET", gateway + "/api/v1/orders/ord_1",
                           headers={**bearer(signing_key.token()), "X-Request-ID": "req-abc-123"})
        minted = await call(http, "GET", gateway + "/api/v1/orders/ord_1", headers=bearer(signing_key.token()))
    assert given[2]["X-Request-ID"] == "req-abc-123"
    assert seen.requests[0]["headers"]["X-Request-ID"] == "req-abc-123"
    assert minted[2]["X-Request-ID"] == seen.requests[1]["headers"]["X-Request-ID"] != "req-abc-123"


async def test_large_and_chunked_answers_stream_through_unchanged(signing_key, jwks_url, http):
    """A statement export can be megabytes, sent chunked: it reaches the client byte for byte."""
    import hashlib

    from aiohttp import web

    from tests.support import free_port, running_app
    payload = bytes(range(256)) * (12 * 1024)  # 3 MiB

    async def export(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/csv"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(payload), 100_000):
            await response.write(payload[start:start + 100_000])
        await response.write_eof()
        return response

    async def fixed(request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/settlement/statements/stm_1", export)
    app.router.add_get("/settlement/statements/stm_2", fixed)
    port = free_port()
    staff = bearer(signing_key.token(sub="frn_g", roles=("franchisee",), franchisee_id="frn_g"))
    async with running_app(app, port) as settlement_url, \
            running_gateway(jwks_url, settlement_url=settlement_url) as gateway:
        for statement in ("stm_1", "stm_2"):
            async with http.get(gateway + f"/api/v1/settlement/statements/{statement}", headers=staff) as response:
                body = await response.read()
                assert response.status == 200
                assert hashlib.sha256(body).digest() == hashlib.sha256(payload).digest()
            if statement == "stm_2":
                assert response.headers["Content-Length"] == str(len(payload))


async def test_public_port_serves_no_metrics_and_a_health_without_details(jwks_url, http):
    """Error names, readiness checks, breaker states and the metrics are for operators: the internal listener."""
    async with running_gateway(jwks_url) as gateway:  # every upstream is down
        public_metrics = await call(http, "GET", gateway + "/metrics")
        public_health = await call(http, "GET", gateway + "/healthz")
        internal_metrics = await http.get(gateway.internal + "/metrics")
        internal_health = await call(http, "GET", gateway.internal + "/healthz")
    assert public_metrics[0] == 404
    assert public_health[0] == 200
    assert public_health[1] == {"status": "degraded",
                                "services": {name: {"status": "down"} for name in public_health[1]["services"]}}
    assert set(public_health[1]["services"]) == {"catalog", "stock", "orders", "membership", "notifications",
                                                 "settlement"}
    assert internal_metrics.status == 200 and "o2o_gateway_breaker_state" in await internal_metrics.text()
    assert internal_health[1]["services"]["catalog"]["error"]
