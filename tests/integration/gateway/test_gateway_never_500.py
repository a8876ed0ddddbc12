"""Whatever a client sends as method, path, query and headers, the gateway answers without a server error, and
every refusal of its own is a problem document. A seeded random sweep (reproducible), over real HTTP."""
from __future__ import annotations

import random

import aiohttp
import pytest
from yarl import URL

from tests.integration.gateway.gateway_kit import call, recording_upstream, running_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

PIECES = ["catalog", "stock", "orders", "members", "auth", "internal", "INTERNAL", "..", ".", "%2e%2e", "%2F", "%5c",
          "%00", "%ff", "%", "%zz", "products", "me", "pickup", "otp", "~", "a b", "%20", "ä", "%E4%B8%AD", "{id}",
          "'", "\"", "<script>", ";", "=", "&", "+", "", "x" * 300, "settlement", "payments", "callback"]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "CONNECTX"]
HEADERS = [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer a.b.c"}, {"Authorization": "Basic Og=="},
           {"Authorization": "Bearer " + "A" * 5000}, {"Content-Type": "application/json"},
           {"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"},
           {"X-Request-ID": "\t" * 3}, {"X-Forwarded-For": "not-an-ip, , 1.1.1.1"}, {"Content-Length": "5"}]


def random_request(rng: random.Random) -> tuple[str, str, dict, bytes | None]:
    segments = [rng.choice(PIECES) for _ in range(rng.randint(0, 5))]
    prefix = rng.choice(["/api/v1/", "/api/v1/", "/api/v1/", "/api/", "/", "/api/docs/"])
    if rng.random() < 0.2:  # a public route, so part of the sweep reaches the upstream
        segments, prefix = [], rng.choice(["/api/v1/catalog/products", "/api/v1/stock/availability",
                                           "/api/v1/stock/locations/loc_1", "/api/v1/catalog/skus/by-code/69"])
    path = prefix + "/".join(s.replace(" ", "%20").replace("\"", "%22").replace("<", "%3C").replace(">", "%3E")
                             .replace("'", "%27").replace("{", "%7B").replace("}", "%7D") for s in segments)
    if rng.random() < 0.3:
        path += "?" + "&".join(f"{rng.choice(PIECES)}={rng.choice(PIECES)}".replace(" ", "%20") for _ in range(3))
    headers = dict(rng.choice(HEADERS))
    body = None
    if "Content-Length" in headers:
        body = b"{bad"
        headers.pop("Content-Length")
    elif rng.random() < 0.3:
        body = rng.choice([b"{}", b"[" * 200, b"\x00\xff", b'{"a":1}' * 100])
    method = "GET" if not segments and prefix.count("/") > 3 else rng.choice(METHODS)
    return method, path, headers, body


async def test_random_requests_never_get_a_server_error():
    rng = random.Random(20261123)
    async with recording_upstream() as (upstream, _), \
            running_gateway("http://127.0.0.1:9/auth/jwks", **{f"{s}_url": upstream for s in (
                "catalog", "stock", "orders", "membership", "notifications", "settlement")},
                            max_url_bytes=1024, rate_ip_burst=10_000) as gateway, \
            aiohttp.ClientSession() as http:
        seen_statuses: dict[int, int] = {}
        for _ in range(400):
            method, path, headers, body = random_request(rng)
            try:
                url = URL(gateway + path, encoded=True)
            except ValueError:
                continue
            try:
                status, payload, answer_headers = await call(http, method, url, headers=headers, data=body)
            except (aiohttp.ClientError, ValueError):
                continue  # the client library refused to send it: nothing reached the gateway
            seen_statuses[status] = seen_statuses.get(status, 0) + 1
            assert status < 500 or status == 503, (method, path, headers, status, payload)
            if status >= 400 and "X-Request-ID" in answer_headers:  # answered by the app, not the HTTP parser
                assert answer_headers["Content-Type"].startswith("application/problem+json"), (method, path, payload)
    assert seen_statuses.get(404, 0) > 20 and seen_statuses.get(200, 0) > 5  # the sweep reached both sides
