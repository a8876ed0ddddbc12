"""Membership's own defence of staff passwords, attacked through the gateway.

The gateway's login budgets are lifted here (`ROOMY_LOGIN_LIMITS`): with N gateway replicas an attacker gets N
budgets, so what membership does on its own is the subject. Membership counts an attempt before judging it
(24 wrong passwords in parallel, then the right one, is refused, not logged in), delays rather than locks (the
owner on another device still logs in), and hashes at most a bounded number of passwords at once, answering
429 beyond it before hashing, so a flood cannot take membership (and with it member login and JWKS) down.
"""
from __future__ import annotations

import asyncio

import pytest_asyncio

from tests.integration.gateway.gateway_kit import (LOCAL_PROXY, ROOMY_LOGIN_LIMITS, call, suite_marks,
                                                   suite_behind_gateway)

NEEDED = ("membership",)
pytestmark = suite_marks(NEEDED)

MANAGER = {"username": "jingan.manager", "password": "jingan-manager-pass"}
HASH_CONCURRENCY, HASH_WAITING = 2, 4


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(mongo_url, bus_namespace):
    membership = dict(
        # The production argon2 cost (64 MiB a hash): what a flood of wrong logins costs for real.
        password_time_cost=3, password_memory_kib=65536,
        password_hash_concurrency=HASH_CONCURRENCY, password_hash_waiting=HASH_WAITING,
        # A delay far longer than the test, so "the right password right after" is refused on any machine.
        staff_login_first_delay_s=3600.0)
    async with suite_behind_gateway(mongo_url, bus_namespace, NEEDED, trusted_proxies=LOCAL_PROXY,
                                    service_overrides={"membership": membership}, upstream_timeout_s=60.0,
                                    **ROOMY_LOGIN_LIMITS) as running:
        yield running



def login(suite, suite_http, credentials: dict, address: str):
    return call(suite_http, "POST", suite.api + "/auth/staff/token", json=credentials,
                headers={"X-Forwarded-For": address})


async def test_parallel_wrong_passwords_then_the_right_one_is_refused_not_logged_in(suite, suite_http):
    attacker = "203.0.113.66"
    wrong = [login(suite, suite_http, {"username": MANAGER["username"], "password": f"guess-{n}"}, attacker)
             for n in range(24)]
    answers = await asyncio.gather(*wrong)
    statuses = [a[0] for a in answers]
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= 5, statuses  # the requester's free failures; the others never judged
    right = await login(suite, suite_http, MANAGER, attacker)
    assert right[0] == 429 and right[1]["type"].endswith("/too-many-login-failures"), right
    assert int(right[2]["Retry-After"]) >= 1
    # A delay, not a lock: the owner at her own counter logs in.
    owner = await login(suite, suite_http, MANAGER, "192.0.2.40")
    assert owner[0] == 200, owner


async def test_a_flood_of_logins_is_refused_before_hashing_and_membership_stays_up(suite, suite_http):
    flood = [login(suite, suite_http, {"username": f"nobody-{n}", "password": "x"}, f"198.51.100.{n + 1}")
             for n in range(40)]
    answers = await asyncio.gather(*flood)
    statuses = [a[0] for a in answers]
    busy = [a for a in answers if a[0] == 429 and a[1]["type"].endswith("/login-busy")]
    assert set(statuses) <= {401, 429}, statuses  # never a 500, 503 or 504
    assert len(busy) >= 40 - HASH_CONCURRENCY - HASH_WAITING, statuses
    assert all(int(a[2]["Retry-After"]) >= 1 for a in busy)
    # Membership's other routes answered throughout; the gateway's breaker never opened.
    jwks = await call(suite_http, "GET", suite.api + "/auth/jwks")
    assert jwks[0] == 200 and jwks[1]["keys"]
    sent = await call(suite_http, "POST", suite.api + "/auth/member/otp", json={"phone": "+8613500000001"},
                      headers={"X-Forwarded-For": "192.0.2.41"})
    assert sent[0] == 202, sent
    health = await call(suite_http, "GET", suite.gateway + "/readyz")
    assert health[0] == 200
