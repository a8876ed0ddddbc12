"""The suite as `make run` starts it: all seven processes ready, health aggregated,
metrics served, and one request id followed from the gateway into a service's log line."""
from __future__ import annotations

import json
import uuid

from tests.support import eventually

DOMAIN_SERVICES = ("catalog", "stock", "orders", "membership", "notifications", "settlement")


async def test_gateway_health_lists_every_service_up(suite, http):
    async with http.get(suite.url("gateway") + "/healthz") as response:
        assert response.status == 200
        health = await response.json()
    assert set(health["services"]) == set(DOMAIN_SERVICES)
    assert {name: s["status"] for name, s in health["services"].items()} == {n: "up" for n in DOMAIN_SERVICES}
    assert health["status"] == "ok"


async def test_every_process_serves_prometheus_metrics(suite, http):
    for service in ("gateway", *DOMAIN_SERVICES):
        async with http.get(suite.metrics_url(service)) as response:
            assert response.status == 200, service
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        assert "# TYPE o2o_http_requests_total counter" in text, service


async def test_request_id_travels_from_gateway_into_the_service_log(suite, http, api):
    request_id = f"e2e-{uuid.uuid4().hex}"
    async with http.get(api + "/catalog/products", headers={"X-Request-ID": request_id}) as response:
        assert response.status == 200
        assert response.headers["X-Request-ID"] == request_id
    log = suite.logs / "catalog.log"

    def logged():
        for line in log.read_text(errors="replace").splitlines():
            if request_id in line:
                try:
                    return json.loads(line)
                except ValueError:
                    continue
        return None

    entry = await eventually(logged)
    assert entry["request_id"] == request_id and entry["service"] == "catalog"
    assert entry["route"] == "/catalog/products" and entry["status"] == 200


async def test_gateway_answers_problems_for_unknown_routes_and_bad_json(suite, http, api):
    async with http.get(api + "/nothing-here") as response:
        assert response.status == 404
        assert response.headers["Content-Type"].startswith("application/problem+json")
    async with http.post(api + "/auth/member/otp", data=b"{broken") as response:
        assert response.status == 400
        assert (await response.json(content_type=None))["type"].endswith("malformed-json")
