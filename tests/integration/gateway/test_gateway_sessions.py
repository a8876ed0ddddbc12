"""Sessions end for real, through the gateway in front of the real membership: logout needs only the refresh
token, and after a logout, a password change, a disabled account, new roles or a forced reset the earlier access
tokens are refused by the gateway (it polls membership's revocations; `eventually` waits for the next poll)."""
from __future__ import annotations

import pytest_asyncio

from tests.integration.gateway.gateway_kit import (LOCAL_PROXY, ROOMY_LOGIN_LIMITS, bearer, call, suite_marks,
                                                   suite_behind_gateway)
from tests.support import eventually

NEEDED = ("membership", "catalog")
pytestmark = suite_marks(NEEDED)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(mongo_url, bus_namespace):
    async with suite_behind_gateway(mongo_url, bus_namespace, NEEDED, trusted_proxies=LOCAL_PROXY,
                                    **ROOMY_LOGIN_LIMITS) as running:
        yield running



async def staff_login(suite, suite_http, username: str, password: str) -> dict:
    status, body, _ = await call(suite_http, "POST", suite.api + "/auth/staff/token",
                                 json={"username": username, "password": password})
    assert status == 200, body
    return body


async def staff_id_of(suite, suite_http, admin: dict, username: str) -> str:
    staff_list = await call(suite_http, "GET", suite.api + "/members/staff", headers=admin)
    return next(s["id"] for s in staff_list[1]["items"] if s["username"] == username)


async def refused_at_the_gateway(suite, suite_http, token: str, path: str) -> None:
    async def revoked():
        status, body, _ = await call(suite_http, "GET", suite.api + path, headers=bearer(token))
        return status == 401 and body["type"].endswith("/token-revoked")
    await eventually(revoked)


async def test_logout_needs_only_the_refresh_token_and_ends_the_access_token_too(suite, suite_http):
    status, sent, _ = await call(suite_http, "POST", suite.api + "/auth/member/otp", json={"phone": "+8613400000001"})
    assert status == 202
    status, tokens, _ = await call(suite_http, "POST", suite.api + "/auth/member/token",
                                   json={"phone": "+8613400000001", "code": sent["dev_code"]})
    assert status == 200
    me = await call(suite_http, "GET", suite.api + "/members/me", headers=bearer(tokens["access_token"]))
    assert me[0] == 200
    logout = await call(suite_http, "POST", suite.api + "/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert logout[0] == 204, logout
    await refused_at_the_gateway(suite, suite_http, tokens["access_token"], "/members/me")
    refresh = await call(suite_http, "POST", suite.api + "/auth/token/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refresh[0] == 401


async def test_a_password_change_ends_every_earlier_token(suite, suite_http):
    first = await staff_login(suite, suite_http, "lujiazui.staff", "lujiazui-staff-pass")
    second = await staff_login(suite, suite_http, "lujiazui.staff", "lujiazui-staff-pass")
    changed = await call(suite_http, "POST", suite.api + "/auth/staff/password", headers=bearer(second["access_token"]),
                         json={"current_password": "lujiazui-staff-pass", "new_password": "lujiazui-new-pass-1"})
    assert changed[0] == 204, changed
    await refused_at_the_gateway(suite, suite_http, first["access_token"], "/stock/levels")
    await refused_at_the_gateway(suite, suite_http, second["access_token"], "/stock/levels")
    assert (await call(suite_http, "POST", suite.api + "/auth/token/refresh",
                       json={"refresh_token": first["refresh_token"]}))[0] == 401
    fresh = await staff_login(suite, suite_http, "lujiazui.staff", "lujiazui-new-pass-1")
    accepted = await call(suite_http, "GET", suite.api + "/members/staff", headers=bearer(fresh["access_token"]))
    assert accepted[0] == 403  # the gateway let the new token through; membership wants HQ for this list


async def test_hq_disables_a_staff_account(suite, suite_http):
    admin = bearer((await staff_login(suite, suite_http, "hq.admin", "hq-admin-pass"))["access_token"])
    staff = await staff_login(suite, suite_http, "xujiahui.staff", "xujiahui-staff-pass")
    not_hq = await call(suite_http, "POST", suite.api + "/members/staff/stf_xujiahui_01/disable",
                        headers=bearer(staff["access_token"]))
    assert not_hq[0] == 403
    staff_id = await staff_id_of(suite, suite_http, admin, "xujiahui.staff")
    disabled = await call(suite_http, "POST", suite.api + f"/members/staff/{staff_id}/disable", headers=admin)
    assert disabled[0] == 200 and disabled[1]["status"] == "disabled", disabled
    await refused_at_the_gateway(suite, suite_http, staff["access_token"], "/stock/levels")
    assert (await call(suite_http, "POST", suite.api + "/auth/staff/token",
                       json={"username": "xujiahui.staff", "password": "xujiahui-staff-pass"}))[0] == 401
    assert (await call(suite_http, "POST", suite.api + "/auth/token/refresh",
                       json={"refresh_token": staff["refresh_token"]}))[0] == 401
    enabled = await call(suite_http, "POST", suite.api + f"/members/staff/{staff_id}/enable", headers=admin)
    assert enabled[0] == 200 and enabled[1]["status"] == "active"
    await staff_login(suite, suite_http, "xujiahui.staff", "xujiahui-staff-pass")


async def test_hq_changes_roles_and_stores_and_the_old_token_stops_counting(suite, suite_http):
    admin = bearer((await staff_login(suite, suite_http, "hq.admin", "hq-admin-pass"))["access_token"])
    manager = await staff_login(suite, suite_http, "wujiaochang.manager", "wujiaochang-manager-pass")
    staff_id = await staff_id_of(suite, suite_http, admin, "wujiaochang.manager")
    changed = await call(suite_http, "PUT", suite.api + f"/members/staff/{staff_id}/access", headers=admin,
                         json={"roles": ["store_staff"], "store_ids": ["loc_sh_jingan"]})
    assert changed[0] == 200 and changed[1]["roles"] == ["store_staff"], changed
    await refused_at_the_gateway(suite, suite_http, manager["access_token"], "/stock/levels")
    refreshed = await call(suite_http, "POST", suite.api + "/auth/token/refresh",
                           json={"refresh_token": manager["refresh_token"]})
    assert refreshed[0] == 200, refreshed  # a refresh picks up the new roles
    analytics = await call(suite_http, "GET", suite.api + "/members/stores/loc_sh_jingan/analytics",
                           headers=bearer(refreshed[1]["access_token"]))
    assert analytics[0] == 403  # a store_staff token now: the manager-only route is refused
    bad = await call(suite_http, "PUT", suite.api + f"/members/staff/{staff_id}/access", headers=admin,
                     json={"roles": ["store_manager"], "store_ids": []})
    assert bad[0] == 422


async def test_hq_forces_a_password_reset(suite, suite_http):
    admin = bearer((await staff_login(suite, suite_http, "hq.admin", "hq-admin-pass"))["access_token"])
    staff = await staff_login(suite, suite_http, "jingan.staff", "jingan-staff-pass")
    staff_id = await staff_id_of(suite, suite_http, admin, "jingan.staff")
    reset = await call(suite_http, "POST", suite.api + f"/members/staff/{staff_id}/password-reset", headers=admin,
                       json={"temporary_password": "temporary-pass-42"})
    assert reset[0] == 200 and reset[1]["password_change_required"] is True, reset
    await refused_at_the_gateway(suite, suite_http, staff["access_token"], "/stock/levels")
    assert (await call(suite_http, "POST", suite.api + "/auth/staff/token",
                       json={"username": "jingan.staff", "password": "jingan-staff-pass"}))[0] == 401
    again = await staff_login(suite, suite_http, "jingan.staff", "temporary-pass-42")
    assert again["password_change_required"] is True
    missing = await call(suite_http, "POST", suite.api + "/members/staff/stf_nobody/disable", headers=admin)
    assert missing[0] == 404
