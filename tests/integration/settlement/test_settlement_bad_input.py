"""A client's mistake is a clear 4xx problem and changes nothing; never a 500."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from libs.pagination import encode_cursor
from services.settlement.domain.periods import local_day_of
from tests.integration.settlement.settlement_kit import new_order_id, order_data

TODAY = local_day_of(datetime.now(UTC), 480).isoformat()
BAD_REQUESTS = [
    ("POST", "/settlement/statements/close", {}, 422, "validation-error"),
    ("POST", "/settlement/statements/close", {"granularity": "year", "date": "2026-01-01"}, 422, "validation-error"),
    ("POST", "/settlement/statements/close", {"granularity": "day", "date": "2026-02-30"}, 422, "validation-error"),
    ("POST", "/settlement/statements/close", {"granularity": "day", "date": "2026-01-01", "account": "a.b"}, 422,
     "invalid-account"),
    ("POST", "/settlement/statements/close", {"granularity": "day", "date": "2026-01-01", "account": "store:nope"},
     404, "not-found"),
    ("POST", "/settlement/statements/close", {"granularity": "day", "date": TODAY}, 409, "period-not-ended"),
    ("POST", "/settlement/statements/close", [1, 2], 422, "validation-error"),
    ("POST", "/settlement/payouts", {"granularity": "day"}, 422, "validation-error"),
    ("POST", "/settlement/payouts", {"granularity": "day", "date": TODAY}, 409, "period-not-ended"),
    ("POST", "/settlement/split-rules", {}, 422, "validation-error"),
    ("POST", "/settlement/split-rules", "not an object", 422, "validation-error"),
    ("GET", "/settlement/statements?date=yesterday", None, 422, "validation-error"),
    ("GET", "/settlement/statements?limit=0", None, 422, "validation-error"),
    ("GET", "/settlement/statements?cursor=%%%", None, 400, "bad-cursor"),
    ("GET", "/settlement/statements?color=red", None, 422, "validation-error"),
    ("GET", "/settlement/statements/stm_day_20260101_nobody", None, 404, "not-found"),
    ("GET", "/settlement/statements/stm_day_99999999_hq", None, 404, "not-found"),
    ("GET", "/settlement/statements/garbage", None, 404, "not-found"),
    ("GET", "/settlement/split-rules/abc", None, 404, "not-found"),
    ("GET", "/settlement/split-rules/99", None, 404, "not-found"),
    ("GET", "/settlement/payouts/pob_nothing", None, 404, "not-found"),
    ("GET", "/settlement/reconciliations/rec_nothing", None, 404, "not-found"),
]


@pytest.mark.parametrize("method, path, body, status, problem_type", BAD_REQUESTS)
async def test_bad_requests_are_answered_with_a_problem(settlement, method, path, body, status, problem_type):
    async with settlement.http.request(method, settlement.url + path, json=body, headers=settlement.admin) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/problem+json"
        problem = await response.json(content_type=None)
    assert problem["type"].endswith("/" + problem_type) and problem["status"] == status
    status, accounts = await settlement.get("/settlement/accounts")
    status, statements = await settlement.get("/settlement/statements")
    status, payouts = await settlement.get("/settlement/payouts")
    status, rules = await settlement.get("/settlement/split-rules")
    assert (accounts["items"], statements["items"], payouts["items"], len(rules["items"])) == ([], [], [], 1)


async def test_malformed_json_and_a_forged_token_are_refused(settlement):
    async with settlement.http.post(settlement.url + "/settlement/payouts", data=b'{"granularity": ',
                                    headers=settlement.admin) as response:
        assert response.status == 400
    forged = settlement.admin["Authorization"][:-4] + "AAAA"
    async with settlement.http.get(settlement.url + "/settlement/statements",
                                   headers={"Authorization": forged}) as response:
        assert response.status == 401


async def test_the_openapi_document_is_valid_and_describes_the_api(settlement):
    from openapi_spec_validator import validate

    status, document = await settlement.get("/openapi.json", headers={})
    assert status == 200
    validate(document)
    assert {"/settlement/statements", "/settlement/statements/{statement_id}", "/settlement/statements/close",
            "/settlement/payouts", "/settlement/reconciliations", "/settlement/split-rules"} <= set(document["paths"])
    closed = document["paths"]["/settlement/statements/close"]["post"]
    assert closed["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ClosePeriod")


async def test_each_list_takes_only_its_own_cursors(settlement):
    """One cursor format for every list: a cursor issued by one list, by another service or edited by hand is a
    400 `bad-cursor` anywhere else, never a wrong page."""
    order_id = new_order_id()
    await settlement.publish("orders.order.completed", order_data(
        order_id, channel="app", staff_id="stf_jingan_01", fee=0,
        fulfilment={"type": "ship", "location_id": "loc_sh_jingan"},
        lines=[{"sku_id": "sku_a", "qty": 1, "unit_price": 9900, "cost_price": 3000}]))
    await settlement.wait_for_postings(order_id, ["capture", "sale"])
    status, first = await settlement.get("/settlement/statements", date=TODAY, limit=1)
    assert status == 200 and len(first["items"]) == 1 and first["next_cursor"], first
    status, second = await settlement.get("/settlement/statements", date=TODAY, limit=1, cursor=first["next_cursor"])
    assert status == 200 and second["items"][0]["account"] > first["items"][0]["account"]

    issued = first["next_cursor"]
    edited = issued[:-2] + ("AA" if not issued.endswith("AA") else "BB")
    foreign = encode_cursor("loc_sh_jingan", "stock.levels")
    for path in ("/settlement/statements", "/settlement/payouts", "/settlement/reconciliations",
                 "/settlement/refund-anomalies"):
        status, problem = await settlement.get(path, cursor=issued)
        assert status == 400 and problem["type"].endswith("/bad-cursor"), (path, problem)
    for cursor in (edited, foreign):
        status, problem = await settlement.get("/settlement/statements", date=TODAY, limit=1, cursor=cursor)
        assert status == 400 and problem["type"].endswith("/bad-cursor"), (cursor, problem)
