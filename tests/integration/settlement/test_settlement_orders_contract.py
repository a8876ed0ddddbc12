"""Settlement fed with events built by orders' own event models and pricing (the contract as orders keeps it):
a return in two parts, refunded by orders' cumulative rule, reverses exactly the returned shares."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from tests.support import eventually
from services.orders import events as orders_events
from services.orders.domain.pricing import apply_discounts, payment_fee, refund_for
from tests.integration.settlement.settlement_kit import new_order_id


def retries() -> float:
    return REGISTRY.get_sample_value("o2o_bus_events_consumed_total", {
        "service": "settlement", "event_type": "orders.order.refunded", "outcome": "retried"}) or 0.0


def stored_order(order_id: str) -> dict:
    lines, totals = apply_discounts([
        {"sku_id": "sku_tee_classic_whi_s", "product_id": "prd_tee_classic", "category": "tees", "qty": 3,
         "unit_price": 9500, "cost_price": 4200, "subtotal": 28500},
        {"sku_id": "sku_tee_graphic_nav_m", "product_id": "prd_tee_graphic", "category": "tees", "qty": 1,
         "unit_price": 12900, "cost_price": 5200, "subtotal": 12900},
    ], coupon_discount=2000, points_discount=333)
    return {"_id": order_id, "member_id": "mbr_demo_chen", "channel": "app", "status": "completed",
            # Orders fills ownership from stock's allocation; settlement must not need anything else.
            "fulfilment": {"type": "pickup", "location_id": "loc_sh_lujiazui", "ownership": "franchise",
                           "franchisee_id": "frn_dongfang"},
            "allocations": [{"location_id": "loc_sh_lujiazui", "ownership": "franchise",
                             "franchisee_id": "frn_dongfang",
                             "lines": [{"sku_id": "sku_tee_classic_whi_s", "qty": 3},
                                       {"sku_id": "sku_tee_graphic_nav_m", "qty": 1}]}],
            "lines": lines, "totals": totals,
            "attribution": {"store_id": "loc_sh_lujiazui", "staff_id": "stf_lujiazui_01", "campaign_id": None},
            "payment": {"provider": "sandbox", "payment_id": f"pay_{order_id}", "amount": totals["total"],
                        "fee": payment_fee(totals["total"], 60)},
            "coupon_codes": ["WELCOME"], "benefits": {"points_used": 3330}}


def refund_event(order: dict, refund_id: str, return_id: str, sku_id: str, qty: int, already: int):
    line = next(line for line in order["lines"] if line["sku_id"] == sku_id)
    refund = refund_for(line, already, qty)
    return_lines = [{"sku_id": sku_id, "product_id": line["product_id"], "category": line["category"], "qty": qty,
                     "unit_price": line["unit_price"], "refund": refund}]
    return orders_events.OrderRefunded(**orders_events.order_fields(order), refund_id=refund_id, refund_amount=refund,
                                       reason="return", return_id=return_id, return_lines=return_lines), refund


def net_by_account(postings: list[dict], kinds: tuple[str, ...]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for posting in postings:
        if posting["kind"] in kinds:
            for entry in posting["entries"]:
                totals[entry["account"]] = totals.get(entry["account"], 0) + entry["credit"] - entry["debit"]
    return {account: amount for account, amount in totals.items() if amount}


async def test_orders_events_settle_and_a_return_in_parts_reverses_exactly(settlement):
    order_id = new_order_id()
    order = stored_order(order_id)
    paid_at = datetime.now(UTC) - timedelta(minutes=5)
    confirmed = orders_events.OrderConfirmed(**orders_events.order_fields({**order, "status": "confirmed"}))
    completed = orders_events.OrderCompleted(**orders_events.order_fields(order))
    # The refund of the first part arrives before the sale (the completed event took the retry queue):
    # settlement holds it back until the sale is posted, then reverses it.
    first, first_amount = refund_event(order, "rfn_a", "ret_a", "sku_tee_classic_whi_s", 2, 0)
    retried = retries()
    await settlement.publish(first.event_type, first.model_dump(mode="json"),
                             occurred_at=paid_at + timedelta(minutes=3))
    await eventually(lambda: retries() > retried)
    assert await settlement.postings(order_id) == []
    await settlement.publish(confirmed.event_type, confirmed.model_dump(mode="json"), occurred_at=paid_at)
    await settlement.publish(completed.event_type, completed.model_dump(mode="json"),
                             occurred_at=paid_at + timedelta(minutes=1))
    postings = await settlement.wait_for_postings(order_id, ["capture", "sale", "refund"])
    sale = next(p for p in postings if p["kind"] == "sale")
    assert sum(e["credit"] for e in sale["entries"]) == order["totals"]["total"] == 39067
    first_reversal = next(p for p in postings if p["kind"] == "refund")
    # The reversed shares are worth exactly what orders refunded: HQ absorbs no difference.
    assert first_reversal["amount_difference"] == 0
    assert {e["account"]: e["credit"] for e in first_reversal["entries"] if e["credit"]} == \
        {"payment_clearing": first_amount}

    rest = [refund_event(order, "rfn_b", "ret_b", "sku_tee_classic_whi_s", 1, 2),
            refund_event(order, "rfn_c", "ret_c", "sku_tee_graphic_nav_m", 1, 0)]
    for event, _ in rest:
        await settlement.publish(event.event_type, event.model_dump(mode="json"))
    postings = await settlement.wait_for_postings(order_id, ["capture", "sale", "refund", "refund", "refund"])
    assert all(p["amount_difference"] == 0 for p in postings if p["kind"] == "refund")
    assert first_amount + sum(amount for _, amount in rest) == order["totals"]["total"]
    # Everything came back: every party's share is reversed to the fen.
    assert net_by_account(postings, ("sale", "refund")) == {"deferred_revenue": -39067, "payment_clearing": 39067}
    assert net_by_account(postings, ("capture", "sale", "refund")) == {}
