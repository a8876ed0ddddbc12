"""Rate limiting answers 429 with Retry-After; guessing OTP codes, passwords and pickup codes is cut off per
target before it reaches the service, whatever address it comes from; order placement is one at a time per
member (flash sale fairness).

The login tests run the production budgets on a clock the test moves (ManualClock); the others use buckets
that refill one token an hour. No assertion depends on real time."""
from __future__ import annotations

import asyncio

import pytest

from tests.support import eventually
from tests.integration.gateway.gateway_kit import (LOCAL_PROXY, ManualClock, bearer, call, recording_upstream,
                                                   running_gateway)

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


async def test_code_guesses_from_rotating_addresses_are_stopped_per_phone(jwks_url, http):
    """The attacker changes address for every guess: the phone's own budget still stops them, and another
    phone (another shopper behind the attacker's addresses) is not affected."""
    wrong_code = (401, {"type": "https://o2o.example/problems/otp-invalid", "title": "Unauthorized",
                        "status": 401, "detail": "wrong code"})
    clock = ManualClock()
    async with recording_upstream({("POST", "/auth/member/token"): wrong_code}) as (membership_url, seen), \
            running_gateway(jwks_url, limiter_clock=clock, membership_url=membership_url,
                            trusted_proxies=LOCAL_PROXY) as gateway:
        url = gateway + "/api/v1/auth/member/token"
        guesses = []
        for n in range(50):  # one minute of guessing, each from a fresh address, phone written differently
            clock.advance(1.2)
            phone = "+86 138-0000-0000" if n % 2 else "+8613800000000"
            guesses.append(await call(http, "POST", url, json={"phone": phone, "code": f"{n:06d}"},
                                      headers=from_ip(f"198.51.{n // 250}.{n % 250 + 1}")))
        other_phone = await call(http, "POST", url, json={"phone": "+8613800000001", "code": "000000"},
                                 headers=from_ip("198.51.0.1"))
    reached = seen.count("POST", "/auth/member/token")
    assert reached <= 12, reached  # the phone's burst of 10, plus one a minute
    assert sum(1 for g in guesses if g[0] == 429) >= 50 - 11
    for guess in guesses[11:]:
        assert_429(guess)
    assert other_phone[0] == 401


async def test_password_guesses_from_rotating_addresses_are_stopped_per_username(jwks_url, http):
    wrong = (401, {"type": "https://o2o.example/problems/invalid-credentials", "title": "Unauthorized",
                   "status": 401, "detail": "wrong username or password"})
    clock = ManualClock()
    async with recording_upstream({("POST", "/auth/staff/token"): wrong}) as (membership_url, seen), \
            running_gateway(jwks_url, limiter_clock=clock, membership_url=membership_url,
                            trusted_proxies=LOCAL_PROXY) as gateway:
        url = gateway + "/api/v1/auth/staff/token"
        guesses = []
        for n in range(50):
            clock.advance(1.2)
            guesses.append(await call(http, "POST", url, json={"username": "jingan.manager", "password": f"p{n}"},
                                      headers=from_ip(f"2001:db8:{n:x}::1")))
        # The owner, a minute after the last guess, is let through again: a delay, not a lockout.
        clock.advance(61)
        owner = await call(http, "POST", url, json={"username": "jingan.manager", "password": "right"},
                           headers=from_ip("192.0.2.10"))
    assert seen.count("POST", "/auth/staff/token") <= 13
    for guess in guesses[11:]:
        assert_429(guess)
    assert owner[0] == 401  # reached membership (the recorder answers 401 to everyone)


async def test_one_device_has_a_small_budget_per_target_and_ipv6_is_keyed_by_64(jwks_url, http):
    """From one device: five tries on a username, then the pair budget stops it, while the same device may
    still log in as another user; addresses of one IPv6 /64 are one device."""
    clock = ManualClock()
    async with recording_upstream() as (membership_url, seen), \
            running_gateway(jwks_url, limiter_clock=clock, membership_url=membership_url,
                            trusted_proxies=LOCAL_PROXY) as gateway:
        url = gateway + "/api/v1/auth/staff/token"
        same_64 = [await call(http, "POST", url, json={"username": "a.staff", "password": "x"},
                              headers=from_ip(f"2001:db8:1:2::{n + 1:x}")) for n in range(6)]
        other_user = await call(http, "POST", url, json={"username": "b.staff", "password": "x"},
                                headers=from_ip("2001:db8:1:2::ff"))
    assert [a[0] for a in same_64[:5]] == [200] * 5
    assert_429(same_64[5])
    assert other_user[0] == 200


async def test_a_stranger_cannot_keep_a_phone_from_getting_codes_for_long(jwks_url, http):
    clock = ManualClock()
    sent = (202, {"phone": "+8613800000009", "expires_in": 300})
    async with recording_upstream({("POST", "/auth/member/otp"): sent}) as (membership_url, seen), \
            running_gateway(jwks_url, limiter_clock=clock, membership_url=membership_url,
                            trusted_proxies=LOCAL_PROXY) as gateway:
        url = gateway + "/api/v1/auth/member/otp"
        stranger = [await call(http, "POST", url, json={"phone": "+8613800000009"},
                               headers=from_ip(f"203.0.113.{n + 1}")) for n in range(10)]
        clock.advance(121)  # two minutes later the owner gets a code again
        owner = await call(http, "POST", url, json={"phone": "+8613800000009"}, headers=from_ip("192.0.2.77"))
    assert [s[0] for s in stranger[:3]] == [202] * 3
    for refused in stranger[3:]:
        assert_429(refused)
    assert owner[0] == 202
    assert seen.count("POST", "/auth/member/otp") == 4


async def test_forwarded_addresses_are_ignored_from_an_untrusted_peer(jwks_url, http):
    """Without a trusted proxy range, X-Forwarded-For is the client's own claim: rotating it buys nothing."""
    async with recording_upstream() as (catalog_url, seen), \
            running_gateway(jwks_url, catalog_url=catalog_url, rate_ip_burst=3, rate_ip_per_s=SLOW) as gateway:
        answers = [await call(http, "GET", gateway + "/api/v1/catalog/products", headers=from_ip(f"10.7.0.{n}"))
                   for n in range(4)]
    assert [a[0] for a in answers[:3]] == [200] * 3
    assert_429(answers[3])
    assert all(r["headers"]["X-Forwarded-For"] == "127.0.0.1" for r in seen.requests)


async def test_pickup_codes_are_limited_per_order_and_per_store_counter(signing_key, jwks_url, http):
    wrong_code = (422, {"type": "https://o2o.example/problems/wrong-pickup-code", "title": "Unprocessable Content",
                        "status": 422, "detail": "wrong code"})
    answers = {("POST", "/orders/ord_1/pickup"): wrong_code}
    staff_a = bearer(signing_key.token(sub="stf_a", roles=("store_staff",), staff_id="stf_a", store_ids=["loc_1"]))
    staff_b = bearer(signing_key.token(sub="stf_b", roles=("store_staff",), staff_id="stf_b", store_ids=["loc_1"]))
    async with recording_upstream(answers) as (orders_url, seen), \
            running_gateway(jwks_url, orders_url=orders_url, trusted_proxies=LOCAL_PROXY, rate_pickup_order_burst=3,
                            rate_pickup_order_per_s=SLOW, rate_pickup_store_burst=10,
                            rate_pickup_store_per_s=SLOW) as gateway:
        pickup_1 = gateway + "/api/v1/orders/ord_1/pickup"
        by_a = [await call(http, "POST", pickup_1, json={"code": f"{n:04d}"}, headers={**staff_a, **from_ip("10.1.0.1")})
                for n in range(4)]
        # Another staff member on another device does not get a fresh budget for the same order...
        by_b_same_order = await call(http, "POST", pickup_1, json={"code": "9999"},
                                     headers={**staff_b, **from_ip("10.1.0.2")})
        # ...but may hand over other orders, until the store's counter has spent its budget.
        others = [await call(http, "POST", gateway + f"/api/v1/orders/ord_{n}/pickup", json={"code": "1"},
                             headers={**staff_b, **from_ip("10.1.0.2")}) for n in range(2, 10)]
    assert [a[0] for a in by_a[:3]] == [422, 422, 422]
    assert_429(by_a[3])
    assert_429(by_b_same_order)
    assert [o[0] for o in others[:7]] == [200] * 7  # 3 + 7 = the store's 10
    assert_429(others[7])
    assert seen.count("POST", "/orders/ord_1/pickup") == 3


async def test_per_ip_and_per_principal_buckets(signing_key, jwks_url, http):
    async with recording_upstream() as (catalog_url, _), recording_upstream() as (orders_url, _), \
            running_gateway(jwks_url, catalog_url=catalog_url, orders_url=orders_url, trusted_proxies=LOCAL_PROXY,
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
        metrics = await http.get(gateway.internal + "/metrics")
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
