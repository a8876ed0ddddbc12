"""Payout batches for a closed period, split rules through the API, and events that cannot be settled."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.support import eventually
from services.settlement.domain.periods import local_day_of
from tests.integration.settlement.settlement_kit import new_order_id, order_data

SHANGHAI = 480
TEE = {"sku_id": "sku_tee_classic_whi_s", "qty": 1, "unit_price": 10000, "cost_price": 4000}


async def test_a_payout_batch_pays_each_party_of_a_closed_period_once(settlement):
    yesterday = datetime.now(UTC) - timedelta(days=1)
    day = local_day_of(yesterday, SHANGHAI).isoformat()
    direct, franchise = new_order_id(), new_order_id()
    # Direct ship-from-store: store 8% = 800, assistant 3% = 300. Franchise pickup: 10000 - 4400 = 5600.
    await settlement.publish("orders.order.completed", order_data(
        direct, channel="app", staff_id="stf_jingan_01", fee=60, lines=[TEE],
        fulfilment={"type": "ship", "location_id": "loc_sh_jingan", "ownership": "direct"}), occurred_at=yesterday)
    await settlement.publish("orders.order.completed", order_data(
        franchise, channel="app", staff_id=None, fee=60, lines=[TEE],
        fulfilment={"type": "pickup", "location_id": "loc_sh_lujiazui", "ownership": "franchise",
                    "franchisee_id": "frn_dongfang"}), occurred_at=yesterday)
    await settlement.wait_for_postings(direct, ["capture", "sale"])
    await settlement.wait_for_postings(franchise, ["capture", "sale"])

    status, problem = await settlement.post("/settlement/payouts", {"granularity": "day", "date": day})
    assert status == 409 and problem["type"].endswith("/period-not-closed"), problem
    assert sorted(problem["accounts"]) == ["franchisee:frn_dongfang", "staff:stf_jingan_01", "store:loc_sh_jingan"]
    status, _ = await settlement.post("/settlement/statements/close", {"granularity": "day", "date": day})
    assert status == 201

    answers = await asyncio.gather(*(settlement.post("/settlement/payouts", {"granularity": "day", "date": day})
                                     for _ in range(6)))
    created = [body for status, body in answers if status == 201]
    assert len(created) == 1, answers
    assert all(body["type"].endswith("/payout-batch-exists") for status, body in answers if status == 409)
    batch = created[0]
    assert batch["status"] == "pending"
    assert sorted((item["account"], item["amount"]) for item in batch["items"]) == [
        ("franchisee:frn_dongfang", 5600), ("staff:stf_jingan_01", 300), ("store:loc_sh_jingan", 800)]
    assert batch["total"] == 6700

    # A franchisee sees its own line of the batch only; another franchisee does not see the batch.
    status, seen = await settlement.get(f"/settlement/payouts/{batch['id']}",
                                        headers=settlement.franchisee("frn_dongfang", ["loc_sh_lujiazui"]))
    assert status == 200 and [(i["account"], i["amount"]) for i in seen["items"]] == [("franchisee:frn_dongfang", 5600)]
    status, _ = await settlement.get(f"/settlement/payouts/{batch['id']}",
                                     headers=settlement.franchisee("frn_yangpu", ["loc_sh_wujiaochang"]))
    assert status == 404

    # The Jing'an manager sees the store's account and nobody else's, and the store's line of the batch.
    manager = settlement.headers_for("stf_jingan_mgr", ["store_manager"], store_ids=["loc_sh_jingan"])
    status, visible = await settlement.get("/settlement/accounts", headers=manager)
    assert status == 200 and [(a["id"], a["balance"]) for a in visible["items"]] == [("store:loc_sh_jingan", 800)]
    status, seen = await settlement.get("/settlement/payouts", headers=manager)
    assert [[item["account"] for item in b["items"]] for b in seen["items"]] == [["store:loc_sh_jingan"]]

    paid = await asyncio.gather(*(settlement.post(f"/settlement/payouts/{batch['id']}/paid") for _ in range(4)))
    assert all(status == 200 and body["status"] == "paid" for status, body in paid), paid
    for account in ("franchisee:frn_dongfang", "staff:stf_jingan_01", "store:loc_sh_jingan"):
        assert await settlement.account_balance(account) == 0, account
    assert await settlement.account_balance("bank") == 6700  # credit: money went out
    status, problem = await settlement.post(f"/settlement/payouts/{batch['id']}/cancel")
    assert status == 409 and problem["type"].endswith("/illegal-transition")
    status, problem = await settlement.post("/settlement/payouts/pob_nope/paid")
    assert status == 404


async def test_split_rules_are_versioned_and_the_rule_in_force_is_recorded_on_the_posting(settlement):
    status, rules = await settlement.get("/settlement/split-rules")
    assert status == 200 and [rule["version"] for rule in rules["items"]] == [1]

    starts = datetime.now(UTC) + timedelta(hours=1)
    franchisee = settlement.franchisee("frn_dongfang", ["loc_sh_lujiazui"])
    status, _ = await settlement.post("/settlement/split-rules", {"effective_from": starts.isoformat(),
                                                                 "staff_commission_bps": 500}, headers=franchisee)
    assert status == 403
    for bad, problem_type in (({"effective_from": "2020-01-01T00:00:00Z"}, "rule-backdated"),
                              ({"effective_from": starts.isoformat(), "staff_commission_bps": 20_000},
                               "validation-error"),
                              ({"effective_from": "2030-01-01T00:00:00"}, "validation-error"),
                              ({"effective_from": starts.isoformat(), "surprise": 1}, "validation-error"),
                              ({"effective_from": starts.isoformat(),
                                "ship_from_store_fee": {"kind": "bonus"}}, "validation-error"),
                              ({"effective_from": starts.isoformat(), "channel_fee_bps": {"app": -5}},
                               "invalid-split-rule")):
        status, problem = await settlement.post("/settlement/split-rules", bad)
        assert status == 422 and problem["type"].endswith(problem_type), (bad, problem)
    async with settlement.http.post(settlement.url + "/settlement/split-rules", data=b"{not json",
                                    headers=settlement.admin) as response:
        assert response.status == 400

    # Several admins at once: each gets its own version, numbered without gaps.
    answers = await asyncio.gather(*(settlement.post("/settlement/split-rules", {
        "effective_from": (starts + timedelta(minutes=minute)).isoformat(), "staff_commission_bps": 500,
        "note": f"concurrent {minute}"}) for minute in range(5)))
    assert sorted(body["version"] for status, body in answers if status == 201) == [2, 3, 4, 5, 6], answers
    newest = max((body for _, body in answers), key=lambda body: body["effective_from"])
    assert newest["ship_from_store_fee"] == {"kind": "percent", "bps": 800, "amount": 0}  # inherited

    order_id = new_order_id()
    await settlement.publish("orders.order.completed", order_data(
        order_id, channel="app", staff_id="stf_jingan_01", fee=0, lines=[TEE],
        fulfilment={"type": "ship", "location_id": "loc_sh_jingan"}), occurred_at=starts + timedelta(hours=1))
    postings = await settlement.wait_for_postings(order_id, ["capture", "sale"])
    sale = next(p for p in postings if p["kind"] == "sale")
    assert sale["rule_version"] == newest["version"]
    assert {e["account"]: e["credit"] for e in sale["entries"]}["staff:stf_jingan_01"] == 500
    status, rule = await settlement.get(f"/settlement/split-rules/{newest['version']}")
    assert status == 200 and rule["staff_commission_bps"] == 500


async def test_an_event_that_cannot_be_settled_goes_to_the_dead_letter_queue_and_changes_nothing(settlement):
    broken_order, good_order = new_order_id(), new_order_id()
    poison = await settlement.publish("orders.order.completed", {"order_id": broken_order, "lines": [
        {"sku_id": "sku_x", "qty": 1, "unit_price": "a lot"}]})
    await settlement.publish("orders.order.completed", order_data(
        good_order, channel="app", staff_id=None, fee=0, lines=[TEE],
        fulfilment={"type": "ship", "location_id": "loc_sh_jingan"}))
    await settlement.wait_for_postings(good_order, ["capture", "sale"])

    message = await eventually(lambda: settlement.dead_lettered(poison.id), timeout=30)
    assert "must be an integer number of fen" in message.headers["x-error"]
    assert message.headers["x-attempt"] >= 2  # retried before it was given up
    assert await settlement.postings(broken_order) == []
