"""Rate limiting answers 429 with Retry-After; brute force on OTP and pickup codes is cut
off before it reaches the service; order placement is one at a time per member (flash sale fairness).

Buckets refill slowly in these tests (one token an hour), so no assertion depends on timing."""
from __future__ import annotations

import asyncio

import pytest

from tests.support import eventually
from tests.integration.gateway.gateway_kit import bearer, call, recording_upstream, running_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

SLOW = 1 / 3600  # one token an hour: nothing refills during a test


def from_ip(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": ip}


def assert_429(answer) -> None:
    status, body, headers = answer
    assert status == 429, answer
    assert body["type"].endswith("/rate-limited")
    assert headers["Content-Type"].startswith("application/problem+json")
    assert int(headers["Retry-After"]) >= 1


async def test_otp_brute_force_is_cut_off_per_client_ip(jwks_url, http):
    wrong_code = (401, {"type": "https://o2o.example/problems/invalid-code", "title": "Unauthorized",
                        "status": 401, "detail": "wrong code"})
    answers = {("POST", "/auth/member/token"): wrong_code, ("POST", "/auth/member/otp"): (202, {"sent": True})}
    async with recording_upstream(answers) as (membership_url, seen), \
            running_gateway(jwks_url, membership_url=membership_url, trust_forwarded_for=True,
                            rate_sensitive_burst=3, rate_sensitive_per_s=SLOW) as gateway:
        url = gateway + "/api/v1/auth/member/token"
        guesses = [await call(http, "POST", url, json={"phone": "+8613800000000", "code": f"{n:06d}"},
                              headers=from_ip("10.0.0.1")) for n in range(6)]
        other_client = await call(http, "POST", url, json={"phone": "+8613800000001", "code": "000000"},
                                  headers=from_ip("10.0.0.2"))
        otp_requests = [await call(http, "POST", gateway + "/api/v1/auth/member/otp", json={"phone": "+86138"},
                                   headers=from_ip("10.0.0.3")) for _ in range(4)]
    assert [g[0] for g in guesses[:3]] == [401, 401, 401]
    for guess in guesses[3:]:
        assert_429(guess)
    assert seen.count("POST", "/auth/member/token") == 4  # three guesses from .1, one from .2: the rest never arrived
    assert other_client[0] == 401  # another client's budget is its own
    assert [o[0] for o in otp_requests[:3]] == [202, 202, 202]
    assert_429(otp_requests[3])


async def test_pickup_code_brute_force_is_cut_off_per_staff_and_per_order(signing_key, jwks_url, http):
    wrong_code = (422, {"type": "https://o2o.example/problems/wrong-pickup-code", "title": "Unprocessable Content",
                        "status": 422, "detail": "wrong code"})
    answers = {("POST", "/orders/ord_1/pickup"): wrong_code, ("POST", "/orders/ord_2/pickup"): wrong_code}
    staff_a = bearer(signing_key.token(sub="stf_a", roles=("store_staff",), staff_id="stf_a", store_ids=["loc_1"]))
    staff_b = bearer(signing_key.token(sub="stf_b", roles=("store_staff",), staff_id="stf_b", store_ids=["loc_1"]))
    async with recording_upstream(answers) as (orders_url, seen), \
            running_gateway(jwks_url, orders_url=orders_url, trust_forwarded_for=True, rate_sensitive_burst=3,
                            rate_sensitive_per_s=SLOW) as gateway:
        pickup_1 = gateway + "/api/v1/orders/ord_1/pickup"
        by_a = [await call(http, "POST", pickup_1, json={"code": f"{n:04d}"}, headers={**staff_a, **from_ip("10.1.0.1")})
                for n in range(4)]
        # Another staff member on another device does not get a fresh budget for the same order...
        by_b_same_order = await call(http, "POST", pickup_1, json={"code": "9999"},
                                     headers={**staff_b, **from_ip("10.1.0.2")})
        # ...but may still hand over other orders.
        by_b_other_order = await call(http, "POST", gateway + "/api/v1/orders/ord_2/pickup", json={"code": "1"},
                                      headers={**staff_b, **from_ip("10.1.0.2")})
    assert [a[0] for a in by_a[:3]] == [422, 422, 422]
    assert_429(by_a[3])
    assert_429(by_b_same_order)
    assert by_b_other_order[0] == 422
    assert seen.count("POST", "/orders/ord_1/pickup") == 3


async def test_per_ip_and_per_principal_buckets(signing_key, jwks_url, http):
    async with recording_upstream() as (catalog_url, _), recording_upstream() as (orders_url, _), \
            running_gateway(jwks_url, catalog_url=catalog_url, orders_url=orders_url, trust_forwarded_for=True,
                            rate_ip_burst=5, rate_ip_per_s=SLOW, rate_principal_burst=3,
                            rate_principal_per_s=SLOW) as gateway:
        browse = [await call(http, "GET", gateway + "/api/v1/catalog/products", headers=from_ip("10.2.0.1"))
                  for _ in range(6)]
        fresh_ip = await call(http, "GET", gateway + "/api/v1/catalog/products", headers=from_ip("10.2.0.2"))
        member_a = bearer(signing_key.token(sub="mbr_a"))
        member_b = bearer(signing_key.token(sub="mbr_b"))
        # One member spread over many addresses is still one principal.
        by_a = [await call(http, "GET", gateway + "/api/v1/orders/ord_1", headers={**member_a, **from_ip(f"10.3.0.{n}")})
                for n in range(4)]
        by_b = await call(http, "GET", gateway + "/api/v1/orders/ord_1", headers={**member_b, **from_ip("10.3.1.1")})
        metrics = await http.get(gateway + "/metrics")
        exposition = await metrics.text()
    assert [b[0] for b in browse[:5]] == [200] * 5
    assert_429(browse[5])
    assert fresh_ip[0] == 200
    assert [a[0] for a in by_a[:3]] == [200] * 3
    assert_429(by_a[3])
    assert by_b[0] == 200
    assert 'o2o_gateway_rate_limited_total{bucket="ip"}' in exposition
    assert 'o2o_gateway_rate_limited_total{bucket="principal"}' in exposition


async def test_one_order_in_flight_per_member(signing_key, jwks_url, http):
    """Flash sale: a member's second POST /orders while the first is still being placed is refused; other
    members are not affected, and once the first is answered the member may order again."""
    answers = {("POST", "/orders"): (201, {"id": "ord_new", "status": "placed"})}
    member_a = bearer(signing_key.token(sub="mbr_a"))
    member_b = bearer(signing_key.token(sub="mbr_b"))
    order = {"channel": "app", "lines": [{"sku_id": "sku_1", "qty": 1}], "fulfilment": {"type": "pickup",
                                                                                       "location_id": "loc_1"}}
    async with recording_upstream(answers, block_header="X-Test-Hold") as (orders_url, seen), \
            running_gateway(jwks_url, orders_url=orders_url, rate_order_burst=3, rate_order_per_s=SLOW) as gateway:
        url = gateway + "/api/v1/orders"
        first = asyncio.create_task(call(http, "POST", url, json=order, headers={**member_a, "X-Test-Hold": "1"}))
        await eventually(lambda: seen.count("POST", "/orders") == 1)
        second = await call(http, "POST", url, json=order, headers=member_a)
        other_member = await call(http, "POST", url, json=order, headers=member_b)
        seen.release.set()
        first_answer = await first
        after = await call(http, "POST", url, json=order, headers=member_a)
        burst_spent = await call(http, "POST", url, json=order, headers=member_a)
    assert first_answer[0] == 201
    assert_429(second)
    assert "already being placed" in second[1]["detail"]
    assert other_member[0] == 201
    assert after[0] == 201
    assert_429(burst_spent)  # burst of 3: first, the refused second, after; this is the fourth
