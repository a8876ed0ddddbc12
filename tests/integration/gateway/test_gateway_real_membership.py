"""The gateway in front of the real membership service (the token issuer): its tokens verify at the gateway
through its JWKS, and guessing OTP codes or staff passwords from one device through the gateway is cut off by
the gateway's per-device-and-target buckets (429), while the owner on another device still logs in."""
from __future__ import annotations

import aiohttp
import pytest
import pytest_asyncio

from tests.integration.gateway.gateway_kit import LOCAL_PROXY, bearer, call, missing_services, suite_behind_gateway

NEEDED = ("membership", "catalog")
_missing = missing_services(NEEDED)
pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(bool(_missing), reason=f"service packages not in the tree yet: {_missing}")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(mongo_url, bus_namespace):
    # The production login budgets; addresses from X-Forwarded-For.
    async with suite_behind_gateway(mongo_url, bus_namespace, NEEDED, trusted_proxies=LOCAL_PROXY) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def test_membership_tokens_verify_at_the_gateway(suite, http):
    device = {"X-Forwarded-For": "10.9.0.1"}
    status, otp, _ = await call(http, "POST", suite.api + "/auth/member/otp", json={"phone": "+8613800000001"},
                                headers=device)
    assert status == 202, otp
    status, token, _ = await call(http, "POST", suite.api + "/auth/member/token",
                                  json={"phone": "+8613800000001", "code": otp["dev_code"]}, headers=device)
    assert status == 200 and token["token_type"] == "Bearer", token
    me = await call(http, "GET", suite.api + "/members/me", headers={**bearer(token["access_token"]), **device})
    assert me[0] == 200 and me[1]["id"] == "mbr_demo_lin"
    admin_route = await call(http, "POST", suite.api + "/catalog/categories", json={"id": "x", "name": "X"},
                             headers={**bearer(token["access_token"]), **device})
    assert admin_route[0] == 403 and admin_route[1]["type"].endswith("/forbidden")


async def test_otp_guessing_is_cut_off_by_the_gateway(suite, http):
    device = {"X-Forwarded-For": "10.9.1.1"}
    phone = "+8613800000002"
    status, _, _ = await call(http, "POST", suite.api + "/auth/member/otp", json={"phone": phone}, headers=device)
    assert status == 202
    # Five guesses per device and phone (asking for the code is a budget of its own).
    guesses = [await call(http, "POST", suite.api + "/auth/member/token", json={"phone": phone, "code": f"{n:06d}"},
                          headers=device) for n in range(1, 6)]
    assert all(400 <= g[0] < 500 and g[0] != 429 for g in guesses), guesses  # membership says "wrong code"
    cut_off = await call(http, "POST", suite.api + "/auth/member/token", json={"phone": phone, "code": "000006"},
                         headers=device)
    assert cut_off[0] == 429 and cut_off[1]["type"].endswith("/rate-limited")
    assert int(cut_off[2]["Retry-After"]) >= 1


async def test_staff_password_guessing_is_cut_off_by_the_gateway(suite, http):
    device = {"X-Forwarded-For": "10.9.2.1"}
    guesses = [await call(http, "POST", suite.api + "/auth/staff/token",
                          json={"username": "jingan.manager", "password": f"guess-{n}"}, headers=device)
               for n in range(5)]
    assert [g[0] for g in guesses] == [401] * 5, guesses
    cut_off = await call(http, "POST", suite.api + "/auth/staff/token",
                         json={"username": "jingan.manager", "password": "jingan-manager-pass"}, headers=device)
    assert cut_off[0] == 429
    other_device = await call(http, "POST", suite.api + "/auth/staff/token",
                              json={"username": "jingan.manager", "password": "jingan-manager-pass"},
                              headers={"X-Forwarded-For": "10.9.2.2"})
    assert other_device[0] == 200, other_device


DEEP_BODIES = {"arrays": b"[" * 5_000 + b"]" * 5_000, "objects": b'{"a":' * 3_000 + b"1" + b"}" * 3_000,
               "unclosed": b"[" * 100_000}


@pytest.mark.parametrize("shape", sorted(DEEP_BODIES))
async def test_deeply_nested_json_is_a_400_not_a_500(suite, http, shape):
    """The decoder's recursion limit once surfaced as a 500; the kit answers 400 for every service."""
    body = DEEP_BODIES[shape]
    headers = {"X-Forwarded-For": "10.9.3.1", "Content-Type": "application/json"}
    through_gateway = [await call(http, "POST", suite.api + path, data=body, headers=headers)
                       for path in ("/auth/member/otp", "/auth/staff/token", "/auth/token/refresh")]
    direct = await call(http, "POST", suite.urls["membership"] + "/auth/member/otp", data=body, headers=headers)
    for status, problem, answer_headers in [*through_gateway, direct]:
        if status == 413:  # the gateway reads a login body only up to 8 KiB
            assert len(body) > 8 * 1024
            continue
        assert status == 400, (status, problem)
        assert problem["type"].endswith("/json-too-deep")
        assert answer_headers["Content-Type"].startswith("application/problem+json")
    assert direct[0] == 400
