"""The split and the refund reversal through the running service: order events in, postings out, checked by hand."""
from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from tests.support import eventually
from tests.integration.settlement.settlement_kit import new_order_id, order_data

FRANCHISE_PICKUP_LINES = [
    {"sku_id": "sku_tee_classic_whi_s", "qty": 2, "unit_price": 9900, "cost_price": 4200},
    {"sku_id": "sku_tee_graphic_nav_m", "qty": 1, "unit_price": 12900, "cost_price": 5200, "discount": 1000},
]


def franchise_pickup(order_id: str) -> dict:
    """Lujiazui is a franchise store of frn_dongfang; the event says so itself."""
    return order_data(order_id, channel="app", staff_id="stf_lujiazui_01", store_id="loc_sh_lujiazui", fee=190,
                      fulfilment={"type": "pickup", "location_id": "loc_sh_lujiazui", "ownership": "franchise",
                                  "franchisee_id": "frn_dongfang"},
                      lines=FRANCHISE_PICKUP_LINES)


def shares_of(posting: dict) -> dict[str, int]:
    """Credit minus debit per account of one posting."""
    shares: dict[str, int] = {}
    for entry in posting["entries"]:
        shares[entry["account"]] = shares.get(entry["account"], 0) + entry["credit"] - entry["debit"]
    return shares


def counter(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_franchise_pickup_and_direct_ship_from_store_shares_match_hand_computed_figures(settlement):
    franchise_order, direct_order = new_order_id(), new_order_id()
    # Franchise pickup (rule v1): net 19800 + 11900 = 31700; provider fee 190 spread by net (largest remainder:
    # 118.68 -> 119, 71.32 -> 71); assistant 3%: 594 + 357; franchisee earns retail minus wholesale
    # (cost x 1.10): 19800 - 9240 = 10560 and 11900 - 5720 = 6180; HQ the rest: 8527 + 5292.
    await settlement.publish("orders.order.confirmed", franchise_pickup(franchise_order))
    await settlement.publish("orders.order.completed", franchise_pickup(franchise_order))
    # Direct ship-from-store on the marketplace (rule v1): 3 x 9900 - coupon 1500 - points 500 = 27700 net;
    # channel 5% = 1385, provider fee 166, assistant 3% = 831, store 8% = 2216, HQ 27700 - 4598 = 23102.
    # The event omits ownership: the local copy of the locations says Jing'an is direct.
    direct = order_data(direct_order, channel="marketplace", staff_id="stf_jingan_01", store_id="loc_sh_jingan",
                        fee=166, fulfilment={"type": "ship", "location_id": "loc_sh_jingan"},
                        lines=[{"sku_id": "sku_tee_classic_whi_s", "qty": 3, "unit_price": 9900, "cost_price": 4200,
                                "discount": 1500}], points_discount=500)
    direct["lines"][0]["points_discount"] = 500
    direct["lines"][0]["line_total"] -= 500
    await settlement.publish("orders.order.confirmed", direct)
    await settlement.publish("orders.order.completed", direct)

    franchise_postings = await settlement.wait_for_postings(franchise_order, ["capture", "sale"])
    direct_postings = await settlement.wait_for_postings(direct_order, ["capture", "sale"])

    franchise_sale = next(p for p in franchise_postings if p["kind"] == "sale")
    assert shares_of(franchise_sale) == {"deferred_revenue": -31700, "provider:wechat": 190,
                                         "staff:stf_lujiazui_01": 951, "franchisee:frn_dongfang": 16740,
                                         "hq": 13819}
    assert franchise_sale["rule_version"] == 1
    direct_sale = next(p for p in direct_postings if p["kind"] == "sale")
    assert shares_of(direct_sale) == {"deferred_revenue": -27700, "channel:marketplace": 1385,
                                      "provider:wechat": 166, "staff:stf_jingan_01": 831,
                                      "store:loc_sh_jingan": 2216, "hq": 23102}
    for posting in franchise_postings + direct_postings:
        assert sum(e["debit"] for e in posting["entries"]) == sum(e["credit"] for e in posting["entries"])
    capture = next(p for p in direct_postings if p["kind"] == "capture")
    assert shares_of(capture) == {"payment_clearing": -27700, "deferred_revenue": 27700}


async def test_return_of_some_lines_reverses_exactly_their_share_and_replays_post_nothing(settlement):
    order_id = new_order_id()
    data = franchise_pickup(order_id)
    await settlement.publish("orders.order.confirmed", data)
    completed = await settlement.publish("orders.order.completed", data)
    await settlement.wait_for_postings(order_id, ["capture", "sale"])

    # The graphic tee (line 2: net 11900) comes back; orders' refunded event names it in return_lines.
    refund = {**data, "refund_id": "rfn_1", "refund_amount": 11900, "reason": "return", "return_id": "ret_1",
              "return_lines": [{"sku_id": "sku_tee_graphic_nav_m", "qty": 1, "unit_price": 12900, "refund": 11900}]}
    refunded = await settlement.publish("orders.order.refunded", refund)
    postings = await settlement.wait_for_postings(order_id, ["capture", "refund", "sale"])
    reversal = next(p for p in postings if p["kind"] == "refund")
    assert shares_of(reversal) == {"franchisee:frn_dongfang": -6180, "hq": -5292, "staff:stf_lujiazui_01": -357,
                                   "provider:wechat": -71, "payment_clearing": 11900}
    balances_before = {account: await settlement.account_balance(account) for account in
                       ("franchisee:frn_dongfang", "hq", "staff:stf_lujiazui_01", "payment_clearing")}
    assert balances_before["franchisee:frn_dongfang"] == 10560  # what is left is exactly line 1's share

    # Redelivery of the very same messages (the inbox drops them) and a republish of the same facts under
    # new envelope ids (the posting key drops them), many at once.
    inbox_duplicates = counter("o2o_bus_events_consumed_total", service="settlement",
                               event_type="orders.order.refunded", outcome="duplicate")
    key_duplicates = counter("o2o_settlement_postings_total", kind="refund", outcome="duplicate")
    sale_duplicates = counter("o2o_settlement_postings_total", kind="sale", outcome="duplicate")
    await asyncio.gather(
        *(settlement.publish("orders.order.refunded", refund, event_id=refunded.id) for _ in range(5)),
        *(settlement.publish("orders.order.refunded", refund) for _ in range(5)),
        *(settlement.publish("orders.order.completed", data, event_id=completed.id) for _ in range(5)),
        *(settlement.publish("orders.order.completed", data) for _ in range(5)))
    await eventually(lambda: counter("o2o_bus_events_consumed_total", service="settlement",
                                     event_type="orders.order.refunded", outcome="duplicate")
                     >= inbox_duplicates + 5)
    await eventually(lambda: counter("o2o_settlement_postings_total", kind="refund", outcome="duplicate")
                     >= key_duplicates + 5)
    await eventually(lambda: counter("o2o_settlement_postings_total", kind="sale", outcome="duplicate")
                     >= sale_duplicates + 5)

    assert await settlement.posting_kinds(order_id) == ["capture", "refund", "sale"]
    for account, balance in balances_before.items():
        assert await settlement.account_balance(account) == balance

    status, anomalies = await settlement.get("/settlement/refund-anomalies")
    assert status == 200 and anomalies["items"] == []  # a refund that matches its sale is no anomaly

    # The other line comes back later: now the whole sale is reversed, to the fen.
    second = {**refund, "refund_id": "rfn_2", "return_id": "ret_2", "refund_amount": 19800,
              "return_lines": [{"sku_id": "sku_tee_classic_whi_s", "qty": 2, "unit_price": 9900, "refund": 19800}]}
    await settlement.publish("orders.order.refunded", second)
    postings = await settlement.wait_for_postings(order_id, ["capture", "refund", "refund", "sale"])
    total: dict[str, int] = {}
    for posting in postings:
        if posting["kind"] in ("sale", "refund"):
            for account, amount in shares_of(posting).items():
                total[account] = total.get(account, 0) + amount
    # Sale and both refunds together: every party is back to zero; the recognised money went back out of
    # payment clearing (credit) ...
    assert {account: amount for account, amount in total.items() if amount} == {
        "deferred_revenue": -31700, "payment_clearing": 31700}
    # ... and with the capture, every account of the order nets to zero.
    for account in ("franchisee:frn_dongfang", "staff:stf_lujiazui_01", "provider:wechat", "hq",
                    "payment_clearing", "deferred_revenue"):
        assert await settlement.account_balance(account) == 0, account


async def test_an_in_store_sale_settles_whichever_of_payment_and_completion_arrives_first(settlement):
    """Scan and pay in store: completion follows payment at once; the capture is posted once either way."""
    order_id = new_order_id()
    # Direct store, in store: store 10% = 990, assistant 3% = 297, fee 59, HQ 9900 - 1346 = 8554.
    data = order_data(order_id, channel="store", staff_id="stf_xujiahui_01", fee=59, provider="alipay",
                      fulfilment={"type": "in_store", "location_id": "loc_sh_xujiahui", "ownership": "direct"},
                      lines=[{"sku_id": "sku_tee_classic_whi_s", "qty": 1, "unit_price": 9900, "cost_price": 4200}])
    captures = counter("o2o_settlement_postings_total", kind="capture", outcome="duplicate")
    await settlement.publish("orders.order.completed", data)
    postings = await settlement.wait_for_postings(order_id, ["capture", "sale"])
    await settlement.publish("orders.order.confirmed", data)
    await eventually(lambda: counter("o2o_settlement_postings_total", kind="capture", outcome="duplicate")
                     > captures)
    assert await settlement.posting_kinds(order_id) == ["capture", "sale"]
    sale = next(p for p in postings if p["kind"] == "sale")
    assert shares_of(sale) == {"deferred_revenue": -9900, "store:loc_sh_xujiahui": 990,
                               "staff:stf_xujiahui_01": 297, "provider:alipay": 59, "hq": 8554}
    capture = next(p for p in postings if p["kind"] == "capture")
    assert capture["source_event_type"] == "orders.order.completed"


async def test_a_refund_unlike_its_sale_is_posted_balanced_and_listed_for_review(settlement):
    order_id = new_order_id()
    data = franchise_pickup(order_id)
    await settlement.publish("orders.order.completed", data)
    await settlement.wait_for_postings(order_id, ["capture", "sale"])
    # Three graphic tees "returned" (one was sold) and 500 fen more refunded than their share.
    refund = {**data, "refund_id": "rfn_odd", "refund_amount": 12400, "return_id": "ret_odd",
              "return_lines": [{"sku_id": "sku_tee_graphic_nav_m", "qty": 3, "unit_price": 12900, "refund": 12400}]}
    await settlement.publish("orders.order.refunded", refund)
    postings = await settlement.wait_for_postings(order_id, ["capture", "refund", "sale"])
    odd = next(p for p in postings if p["kind"] == "refund")
    assert odd["unmatched"] == [{"sku_id": "sku_tee_graphic_nav_m", "qty": 2}] and odd["amount_difference"] == 500
    # Still balanced: HQ bears the 500 fen the shares do not cover.
    assert sum(e["debit"] for e in odd["entries"]) == sum(e["credit"] for e in odd["entries"]) == 12400
    assert shares_of(odd)["hq"] == -5292 - 500
    status, anomalies = await settlement.get("/settlement/refund-anomalies")
    assert status == 200 and [a["id"] for a in anomalies["items"]] == [odd["id"]]
    status, _ = await settlement.get("/settlement/refund-anomalies",
                                     headers=settlement.franchisee("frn_dongfang", ["loc_sh_lujiazui"]))
    assert status == 403
