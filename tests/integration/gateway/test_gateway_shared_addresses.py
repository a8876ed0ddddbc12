"""The gateway's production limiter settings in front of the real membership service: honest people behind one
address (a store's Wi-Fi, a carrier NAT, a busy pickup counter) all get through, while guessing one phone's code
or one username's password from rotating addresses is stopped.

The limiter runs on a clock the test moves (`ManualClock`): "within a minute" is the clock advanced 1.2 s per
shopper, "an hour" 1.8 s per refresh, however long the machine really takes. No assertion depends on real time.
"""
from __future__ import annotations

import pytest
import pytest_asyncio

from tests.integration.gateway.gateway_kit import (LOCAL_PROXY, ManualClock, bearer, call, suite_marks,
                                                   recording_upstream, suite_behind_gateway)

NEEDED = ("membership",)
pytestmark = suite_marks(NEEDED)

STORE_WIFI = {"X-Forwarded-For": "203.0.113.10"}
CARRIER_NAT = {"X-Forwarded-For": "198.51.100.20"}


@pytest.fixture(scope="module")
def clock() -> ManualClock:
    return ManualClock()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def orders(mongo_url):
    """The pickup counter's side: an orders stand-in that hands over every order (the real orders service
    has its own tests; here the gateway's budget is the subject)."""
    async with recording_upstream() as (url, seen):
        yield url, seen


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(mongo_url, bus_namespace, clock, orders):
    # Nothing but the proxy range differs from production: no rate_* override.
    async with suite_behind_gateway(mongo_url, bus_namespace, NEEDED, limiter_clock=clock,
                                    trusted_proxies=LOCAL_PROXY, orders_url=orders[0]) as running:
        yield running



async def _log_in(suite, suite_http, phone: str, headers: dict) -> dict:
    status, sent, _ = await call(suite_http, "POST", suite.api + "/auth/member/otp", json={"phone": phone}, headers=headers)
    assert status == 202, sent
    status, tokens, _ = await call(suite_http, "POST", suite.api + "/auth/member/token",
                                   json={"phone": phone, "code": sent["dev_code"]}, headers=headers)
    assert status == 200, tokens
    return tokens


async def test_fifty_shoppers_on_one_store_wifi_log_in_within_a_minute(suite, suite_http, clock):
    logged_in = []
    for n in range(50):
        clock.advance(1.2)
        logged_in.append(await _log_in(suite, suite_http, f"+86139{n:08d}", STORE_WIFI))
    assert len({t["access_token"] for t in logged_in}) == 50


async def test_two_thousand_hourly_refreshes_behind_one_nat_succeed(suite, suite_http, clock):
    refresh_tokens = [(await _log_in(suite, suite_http, f"+86137{n:08d}", CARRIER_NAT))["refresh_token"] for n in range(20)]
    refused = []
    for round_ in range(100):  # 20 phones refreshing 100 times: 2,000 refreshes in an hour
        for index, token in enumerate(refresh_tokens):
            clock.advance(1.8)
            status, answer, _ = await call(suite_http, "POST", suite.api + "/auth/token/refresh",
                                           json={"refresh_token": token}, headers=CARRIER_NAT)
            if status != 200:
                refused.append((round_, index, status, answer.get("type")))
                continue
            refresh_tokens[index] = answer["refresh_token"]
    assert refused == []


async def test_a_busy_counter_hands_over_forty_pickups_in_five_minutes(suite, suite_http, clock, orders):
    counter = {"X-Forwarded-For": "203.0.113.50"}
    status, login, _ = await call(suite_http, "POST", suite.api + "/auth/staff/token",
                                  json={"username": "jingan.staff", "password": "jingan-staff-pass"}, headers=counter)
    assert status == 200, login
    staff = {**bearer(login["access_token"]), **counter}
    answers = []
    for n in range(40):
        clock.advance(7.5)
        first_try_wrong = n % 4 == 0  # a shopper misreads the code now and then
        tries = 2 if first_try_wrong else 1
        for _ in range(tries):
            answers.append(await call(suite_http, "POST", suite.api + f"/orders/ord_counter_{n}/pickup",
                                      json={"code": "123456"}, headers=staff))
    assert [a[0] for a in answers] == [200] * len(answers)
    assert sum(1 for r in orders[1].requests if r["path"].endswith("/pickup")) == len(answers)


async def test_fifty_guesses_of_one_phones_code_from_rotating_addresses_are_stopped(suite, suite_http, clock):
    phone = "+8613600000001"
    status, _, _ = await call(suite_http, "POST", suite.api + "/auth/member/otp", json={"phone": phone},
                              headers={"X-Forwarded-For": "192.0.2.1"})
    assert status == 202
    answers = []
    for n in range(50):
        clock.advance(1.2)
        answers.append(await call(suite_http, "POST", suite.api + "/auth/member/token",
                                  json={"phone": phone, "code": f"{n:06d}"},
                                  headers={"X-Forwarded-For": f"100.64.{n}.{n + 1}"}))
    assert not any(a[0] == 200 for a in answers)
    cut_by_gateway = [a for a in answers if a[0] == 429 and a[1]["type"].endswith("/rate-limited")]
    assert len(cut_by_gateway) >= 50 - 11, [a[0] for a in answers]


async def test_fifty_guesses_of_one_username_from_rotating_addresses_are_stopped(suite, suite_http, clock):
    answers = []
    for n in range(50):
        clock.advance(1.2)
        answers.append(await call(suite_http, "POST", suite.api + "/auth/staff/token",
                                  json={"username": "jingan.manager", "password": f"guess-{n}"},
                                  headers={"X-Forwarded-For": f"2001:db8:{n:x}::7"}))
    assert not any(a[0] == 200 for a in answers)
    cut_by_gateway = [a for a in answers if a[0] == 429 and a[1]["type"].endswith("/rate-limited")]
    assert len(cut_by_gateway) >= 50 - 11, [a[0] for a in answers]
    # Membership judged at most the target's burst plus what a minute refills.
    assert sum(1 for a in answers if a[0] == 401) <= 11
