"""BOLA (OWASP API1): through the gateway, with the real services behind it, nobody reaches
an object that is not theirs. Each refusal is 404 (not 403: the object's existence is not revealed), and each
is paired with the owner doing the same thing successfully, so the 404 cannot come from a broken route."""
from __future__ import annotations

import datetime as dt

import aiohttp
import pytest
import pytest_asyncio

from tests.support import eventually
from tests.integration.gateway.gateway_kit import ROOMY_LOGIN_LIMITS, bearer, call, missing_services, suite_behind_gateway

NEEDED = ("membership", "catalog", "stock", "orders", "settlement")
_missing = missing_services(NEEDED)
pytestmark = [pytest.mark.asyncio(loop_scope="module"),
              pytest.mark.skipif(bool(_missing), reason=f"service packages not in the tree yet: {_missing}")]

WUJIAOCHANG = "loc_sh_wujiaochang"  # franchise store of frn_yangpu
SKU = "sku_tee_classic_bla_s"  # 15 on hand there


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite(mongo_url, bus_namespace):
    # Logins all come from 127.0.0.1 here: the strict login budget is not what this test is about.
    async with suite_behind_gateway(mongo_url, bus_namespace, NEEDED, **ROOMY_LOGIN_LIMITS,
                                    rate_order_burst=100) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def member_login(http, api: str, phone: str) -> dict[str, str]:
    status, otp, _ = await call(http, "POST", api + "/auth/member/otp", json={"phone": phone})
    assert status == 202, otp
    status, token, _ = await call(http, "POST", api + "/auth/member/token", json={"phone": phone, "code": otp["dev_code"]})
    assert status == 200, token
    return bearer(token["access_token"])


async def staff_login(http, api: str, username: str) -> dict[str, str]:
    password = username.replace(".", "-") + "-pass"  # the demo dataset's convention
    status, token, _ = await call(http, "POST", api + "/auth/staff/token", json={"username": username,
                                                                                "password": password})
    assert status == 200, token
    return bearer(token["access_token"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def people(suite, http):
    api = suite.api
    return {
        "member_a": await member_login(http, api, "+8613800000001"),
        "member_b": await member_login(http, api, "+8613800000002"),
        "staff_x": await staff_login(http, api, "xujiahui.staff"),  # another store
        "staff_y": await staff_login(http, api, "wujiaochang.staff"),  # the order's store
        "franchisee_f": await staff_login(http, api, "dongfang.owner"),
        "franchisee_g": await staff_login(http, api, "yangpu.owner"),  # owns Wujiaochang
    }


async def place_pickup_order(http, api: str, member: dict) -> dict:
    order = {"channel": "app", "lines": [{"sku_id": SKU, "qty": 1}],
             "fulfilment": {"type": "pickup", "location_id": WUJIAOCHANG}}
    status, placed, _ = await call(http, "POST", api + "/orders", json=order, headers=member)
    assert status == 201, placed
    return placed


async def test_member_cannot_read_pay_cancel_or_return_another_members_order(suite, people, http):
    api = suite.api
    order = await place_pickup_order(http, api, people["member_b"])
    url = f"{api}/orders/{order['id']}"
    attempts = {
        "read": await call(http, "GET", url, headers=people["member_a"]),
        "pay": await call(http, "POST", url + "/pay", json={"card_number": "4242424242424242"},
                          headers=people["member_a"]),
        "cancel": await call(http, "POST", url + "/cancel", json={}, headers=people["member_a"]),
        "return": await call(http, "POST", url + "/returns", json={"lines": [{"sku_id": SKU, "qty": 1}],
                                                                   "reason": "not mine"}, headers=people["member_a"]),
    }
    for action, (status, body, headers) in attempts.items():
        assert status == 404, (action, body)
        assert headers["Content-Type"].startswith("application/problem+json")
        assert body["type"].endswith("/not-found")
    # Control: the owner sees and pays the very same order.
    owner_read = await call(http, "GET", url, headers=people["member_b"])
    assert owner_read[0] == 200 and owner_read[1]["id"] == order["id"]
    owner_pay = await call(http, "POST", url + "/pay", json={"card_number": "4242424242424242"},
                           headers=people["member_b"])
    assert owner_pay[0] == 200, owner_pay
    # The other member's listing does not contain it either.
    listing = await call(http, "GET", api + "/orders", headers=people["member_a"])
    assert listing[0] == 200 and order["id"] not in {o["id"] for o in listing[1]["items"]}


async def test_staff_of_another_store_cannot_hand_over_and_franchisee_cannot_read_anothers_statement(
        suite, people, http):
    api = suite.api
    order = await place_pickup_order(http, api, people["member_b"])
    url = f"{api}/orders/{order['id']}"
    paid = await call(http, "POST", url + "/pay", json={"card_number": "4242424242424242"},
                      headers=people["member_b"])
    assert paid[0] == 200, paid

    foreign_ready = await call(http, "POST", url + "/ready-for-pickup", json={}, headers=people["staff_x"])
    foreign_read = await call(http, "GET", url, headers=people["staff_x"])
    assert foreign_ready[0] == 404, foreign_ready
    assert foreign_read[0] == 404, foreign_read
    ready = await call(http, "POST", url + "/ready-for-pickup", json={}, headers=people["staff_y"])
    assert ready[0] == 200, ready
    code = ready[1]["dev_pickup_code"]
    foreign_pickup = await call(http, "POST", url + "/pickup", json={"code": code}, headers=people["staff_x"])
    assert foreign_pickup[0] == 404, foreign_pickup
    handed_over = await call(http, "POST", url + "/pickup", json={"code": code}, headers=people["staff_y"])
    assert handed_over[0] == 200 and handed_over[1]["status"] == "completed", handed_over

    # The completed sale reaches settlement over the bus and credits franchisee G (Wujiaochang's owner).
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date().isoformat()

    async def statement_of_g():
        status, page, _ = await call(http, "GET", f"{api}/settlement/statements?granularity=day&date={today}",
                                     headers=people["franchisee_g"])
        assert status == 200, page
        return next((s for s in page["items"] if s.get("account") == "franchisee:frn_yangpu"), None)

    statement = await eventually(statement_of_g, timeout=30)
    statement_url = f"{api}/settlement/statements/{statement['id']}"
    own = await call(http, "GET", statement_url, headers=people["franchisee_g"])
    assert own[0] == 200, own
    other = await call(http, "GET", statement_url, headers=people["franchisee_f"])
    assert other[0] == 404, other
    other_list = await call(http, "GET", f"{api}/settlement/statements?granularity=day&date={today}",
                            headers=people["franchisee_f"])
    assert statement["id"] not in {s.get("id") for s in other_list[1]["items"]}
