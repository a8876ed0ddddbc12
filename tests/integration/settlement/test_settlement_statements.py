"""Statements per party per period: closing freezes and announces them; franchisees see only their own."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from services.settlement.domain.periods import local_day_of
from tests.integration.settlement.settlement_kit import new_order_id, order_data

SHANGHAI = 480


def franchise_sale(order_id: str, location_id: str, franchisee_id: str) -> dict:
    # 2 x 9900 at a franchise store, pickup, no assistant: franchisee 19800 - 2 x 4200 x 1.1 = 10560.
    return order_data(order_id, channel="app", staff_id=None, fee=119,
                      fulfilment={"type": "pickup", "location_id": location_id, "ownership": "franchise",
                                  "franchisee_id": franchisee_id},
                      lines=[{"sku_id": "sku_tee_classic_whi_s", "qty": 2, "unit_price": 9900, "cost_price": 4200}])


async def _sell_yesterday(settlement) -> tuple[datetime, list[str]]:
    yesterday = datetime.now(UTC) - timedelta(days=1)
    orders = []
    for location_id, franchisee_id in (("loc_sh_lujiazui", "frn_dongfang"), ("loc_sh_wujiaochang", "frn_yangpu")):
        order_id = new_order_id()
        orders.append(order_id)
        await settlement.publish("orders.order.completed", franchise_sale(order_id, location_id, franchisee_id),
                                 occurred_at=yesterday)
    for order_id in orders:
        await settlement.wait_for_postings(order_id, ["capture", "sale"])
    return yesterday, orders


async def test_a_franchisee_reads_only_its_own_statement(settlement):
    yesterday, (dongfang_order, _) = await _sell_yesterday(settlement)
    day = local_day_of(yesterday, SHANGHAI)
    own = f"stm_day_{day:%Y%m%d}_franchisee:frn_dongfang"
    other = f"stm_day_{day:%Y%m%d}_franchisee:frn_yangpu"
    dongfang = settlement.franchisee("frn_dongfang", ["loc_sh_lujiazui"])

    status, statement = await settlement.get(f"/settlement/statements/{own}", headers=dongfang)
    assert status == 200, statement
    assert (statement["status"], statement["opening"], statement["closing"]) == ("open", 0, 10560)
    assert [(e["order_id"], e["credit"]) for e in statement["entries"]] == [(dongfang_order, 10560)]
    week_start = day - timedelta(days=day.weekday())
    status, week = await settlement.get(f"/settlement/statements/stm_week_{week_start:%Y%m%d}_franchisee:frn_dongfang",
                                        headers=dongfang)
    assert status == 200 and (week["granularity"], week["closing"]) == ("week", 10560)
    status, month = await settlement.get(f"/settlement/statements/stm_month_{day:%Y%m}01_franchisee:frn_dongfang",
                                         headers=dongfang)
    assert status == 200 and month["closing"] == 10560

    # Another franchisee's statement, HQ's account, a store's account: all "not found" for this token.
    for forbidden in (other, f"stm_day_{day:%Y%m%d}_hq", f"stm_day_{day:%Y%m%d}_store:loc_sh_lujiazui"):
        status, problem = await settlement.get(f"/settlement/statements/{forbidden}", headers=dongfang)
        assert status == 404, problem
        assert problem["type"].endswith("/not-found")
    status, _ = await settlement.get(f"/settlement/statements/{other}", headers=dongfang, format="csv")
    assert status == 404
    # The list shows it only its own account.
    status, listing = await settlement.get("/settlement/statements", headers=dongfang, date=day.isoformat())
    assert status == 200 and [item["account"] for item in listing["items"]] == ["franchisee:frn_dongfang"]
    status, listing = await settlement.get("/settlement/statements", headers=dongfang, date=day.isoformat(),
                                           account="franchisee:frn_yangpu")
    assert status == 200 and listing["items"] == []
    # HQ sees both; a store manager of another store sees neither; no token is 401; a customer 403.
    status, _ = await settlement.get(f"/settlement/statements/{other}")
    assert status == 200
    manager = settlement.headers_for("stf_jingan_mgr", ["store_manager"], store_ids=["loc_sh_jingan"])
    status, _ = await settlement.get(f"/settlement/statements/{own}", headers=manager)
    assert status == 404
    status, problem = await settlement.get(f"/settlement/statements/{own}", headers={})
    assert status == 401
    customer = settlement.headers_for("mbr_demo_lin", ["customer"], member_id="mbr_demo_lin")
    status, problem = await settlement.get(f"/settlement/statements/{own}", headers=customer)
    assert status == 403


async def test_closing_a_period_freezes_it_announces_it_and_exports_csv(settlement):
    yesterday, (dongfang_order, _) = await _sell_yesterday(settlement)
    day = local_day_of(yesterday, SHANGHAI)
    closed_events = await settlement.listen("settlement.statement.closed")

    # Many admins press "close" at once: each account's statement is frozen and announced exactly once.
    answers = await asyncio.gather(*(settlement.post("/settlement/statements/close",
                                                     {"granularity": "day", "date": day.isoformat()})
                                     for _ in range(8)))
    assert sorted(status for status, _ in answers).count(201) == 1, answers
    assert all(status in (200, 201) for status, _ in answers)
    first = next(body for status, body in answers if status == 201)
    accounts = sorted(statement["account"] for statement in first["closed"])
    assert "franchisee:frn_dongfang" in accounts and "hq" in accounts
    assert all(not body["closed"] for status, body in answers if status == 200)

    announced = await closed_events.wait_for("settlement.statement.closed", count=len(accounts))
    assert len(announced) == len(accounts)  # once each
    by_account = {event["data"]["account"]: event["data"] for event in announced}
    assert sorted(by_account) == accounts
    dongfang = by_account["franchisee:frn_dongfang"]
    assert (dongfang["party_kind"], dongfang["party_id"], dongfang["franchisee_id"], dongfang["net_amount"]) == \
        ("franchisee", "frn_dongfang", "frn_dongfang", 10560)

    # A late event for yesterday cannot change the frozen statement: it is booked today.
    late_order = new_order_id()
    await settlement.publish("orders.order.completed",
                             franchise_sale(late_order, "loc_sh_lujiazui", "frn_dongfang"), occurred_at=yesterday)
    postings = await settlement.wait_for_postings(late_order, ["capture", "sale"])
    assert all(local_day_of(datetime.fromisoformat(p["booked_at"].replace("Z", "+00:00")), SHANGHAI) > day
               for p in postings)
    own = f"stm_day_{day:%Y%m%d}_franchisee:frn_dongfang"
    dongfang_headers = settlement.franchisee("frn_dongfang", ["loc_sh_lujiazui"])
    status, statement = await settlement.get(f"/settlement/statements/{own}", headers=dongfang_headers)
    assert status == 200
    assert (statement["status"], statement["closing"], len(statement["entries"])) == ("closed", 10560, 1)
    today = f"stm_day_{local_day_of(datetime.now(UTC), SHANGHAI):%Y%m%d}_franchisee:frn_dongfang"
    status, current = await settlement.get(f"/settlement/statements/{today}", headers=dongfang_headers)
    assert (current["status"], current["opening"], current["closing"]) == ("open", 10560, 21120)

    status, text = await settlement.text(f"/settlement/statements/{own}", headers=dongfang_headers, format="csv")
    assert status == 200
    rows = text.strip().splitlines()
    assert rows[0].startswith("statement_id") and own in rows[1]
    assert any(dongfang_order in row and ",10560," in row for row in rows)
    assert rows[-1].endswith(",closing,,0,10560,10560,")
    # The closed list shows it to its owner.
    status, listing = await settlement.get("/settlement/statements", headers=dongfang_headers)
    assert [item["id"] for item in listing["items"]] == [own]

    # Today has not ended: it cannot be closed.
    status, problem = await settlement.post("/settlement/statements/close", {
        "granularity": "day", "date": local_day_of(datetime.now(UTC), SHANGHAI).isoformat()})
    assert status == 409 and problem["type"].endswith("/period-not-ended")


async def test_the_scheduled_job_closes_the_ended_periods(mongo_url, bus_namespace):
    from services.settlement.jobs import close_due_periods
    from tests.integration.settlement.conftest import settlement_service

    async with settlement_service(mongo_url, bus_namespace, auto_close_grace_hours=0) as settlement:
        yesterday, _ = await _sell_yesterday(settlement)
        day = local_day_of(yesterday, SHANGHAI)
        dongfang = settlement.franchisee("frn_dongfang", ["loc_sh_lujiazui"])
        closed_events = await settlement.listen("settlement.statement.closed")

        await close_due_periods(settlement.app)  # what the periodic job runs
        await close_due_periods(settlement.app)  # and again: nothing new
        status, statement = await settlement.get(f"/settlement/statements/stm_day_{day:%Y%m%d}_franchisee:frn_dongfang",
                                                 headers=dongfang)
        assert status == 200 and (statement["status"], statement["closing"]) == ("closed", 10560)
        # Yesterday, last week and last month closed for every account, each statement announced.
        status, listing = await settlement.get("/settlement/statements", limit=200)
        frozen = {item["id"] for item in listing["items"]}
        assert {item["granularity"] for item in listing["items"]} == {"day", "week", "month"}
        assert {item["account"] for item in listing["items"]} >= {"franchisee:frn_dongfang",
                                                                   "franchisee:frn_yangpu", "hq"}
        events = await closed_events.wait_for("settlement.statement.closed", count=len(frozen))
        announced = {event["data"]["statement_id"] for event in events}
        assert announced == frozen


async def test_a_business_day_is_the_local_day_on_both_sides_of_16_utc(settlement):
    """Shanghai's business day turns at 16:00 UTC: a sale a minute before is on that UTC date's statement,
    a sale a minute after is on the next day's; `date=today` is the current local day, whatever the UTC hour."""
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    before = datetime(yesterday.year, yesterday.month, yesterday.day, 15, 59, tzinfo=UTC)
    after = before + timedelta(minutes=2)
    sales = {}
    for moment in (before, after):
        order_id = new_order_id()
        await settlement.publish("orders.order.completed", franchise_sale(order_id, "loc_sh_lujiazui", "frn_dongfang"),
                                 occurred_at=moment)
        await settlement.wait_for_postings(order_id, ["capture", "sale"])
        sales[moment] = order_id
    dongfang = settlement.franchisee("frn_dongfang", ["loc_sh_lujiazui"])

    async def orders_on(day: str) -> tuple[dict, set[str]]:
        status, page = await settlement.get("/settlement/statements", headers=dongfang, date=day, granularity="day")
        assert status == 200, page
        summary = next(item for item in page["items"] if item["account"] == "franchisee:frn_dongfang")
        status, statement = await settlement.get(f"/settlement/statements/{summary['id']}", headers=dongfang)
        assert status == 200, statement
        return summary, {entry["order_id"] for entry in statement["entries"]}

    first, on_first = await orders_on(yesterday.isoformat())
    assert sales[before] in on_first and sales[after] not in on_first
    assert (first["time_zone"], first["local_date"]) == ("Asia/Shanghai", yesterday.isoformat())
    assert first["period_start"] == f"{yesterday - timedelta(days=1)}T16:00:00Z"
    assert first["period_end"] == f"{yesterday}T16:00:00Z"
    second, on_second = await orders_on((yesterday + timedelta(days=1)).isoformat())
    assert sales[after] in on_second and sales[before] not in on_second

    # Right now, asked as `today`: the statement of the current local day holds a sale made now.
    order_id = new_order_id()
    await settlement.publish("orders.order.completed", franchise_sale(order_id, "loc_sh_lujiazui", "frn_dongfang"))
    await settlement.wait_for_postings(order_id, ["capture", "sale"])
    today, on_today = await orders_on("today")
    assert order_id in on_today
    assert today["local_date"] == local_day_of(datetime.now(UTC), "Asia/Shanghai").isoformat()
