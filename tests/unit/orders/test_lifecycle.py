from datetime import UTC, datetime, timedelta

import pytest

from services.orders.domain import order as domain
from services.orders.domain import saga
from libs.refusal import CONFLICT, Refusal
from services.orders.domain.lifecycle import OrderError, can_transition, transition

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
LINES = [{"sku_id": "sku_a", "product_id": "prd_a", "category": "tees", "qty": 2, "unit_price": 5000,
          "cost_price": 2000, "subtotal": 10000, "discount": 1000, "points_discount": 0, "line_total": 9000},
         {"sku_id": "sku_b", "product_id": "prd_b", "category": "jeans", "qty": 1, "unit_price": 3000,
          "cost_price": 1000, "subtotal": 3000, "discount": 0, "points_discount": 0, "line_total": 3000}]
TOTALS = {"subtotal": 13000, "discount": 1000, "points_discount": 0, "total": 12000}


def placed(kind="pickup", channel="app", benefits=None):
    fulfilment = {"type": kind, "location_id": "loc_a"} if kind != "ship" else {"type": "ship", "address": {"lat": 1, "lng": 2}}
    order = domain.new_order("ord_1", member_id="mbr_1", channel=channel if kind != "in_store" else "store",
                             fulfilment=fulfilment, lines=LINES, requested_lines=[], coupon_codes=[], points=0,
                             attribution={}, created_by="member:mbr_1", now=NOW)
    reservation = {"reservation_id": "rsv_1", "allocations": [
        {"location_id": "loc_a", "ownership": "franchise", "franchisee_id": "frn_1", "lines": []}]}
    domain.place(order, lines=LINES, totals=TOTALS, reservation=reservation, benefits=benefits,
                 expires_at=NOW + timedelta(minutes=15), now=NOW)
    return order


def pay(order):
    return domain.confirm_payment(order, {"provider": "sandbox", "payment_id": "pay_1", "amount": 12000, "fee": 72},
                                  "member:mbr_1", NOW)


@pytest.mark.parametrize("kind,path", [
    ("ship", ["pending", "pending_payment", "confirmed", "allocated", "shipped", "completed", "refunded"]),
    ("pickup", ["pending", "pending_payment", "confirmed", "ready_for_pickup", "picked_up", "completed", "refunded"]),
    ("in_store", ["pending", "pending_payment", "confirmed", "completed", "refunded"]),
])
def test_each_fulfilment_has_its_own_happy_path(kind, path):
    for current, target in zip(path, path[1:]):
        assert can_transition(kind, current, target)


@pytest.mark.parametrize("kind,current,target", [
    ("ship", "pending_payment", "shipped"), ("ship", "shipped", "cancelled"), ("ship", "confirmed", "ready_for_pickup"),
    ("pickup", "confirmed", "shipped"), ("pickup", "picked_up", "cancelled"), ("pickup", "pending_payment", "picked_up"),
    ("in_store", "confirmed", "cancelled"), ("in_store", "completed", "cancelled"), ("ship", "cancelled", "confirmed"),
    ("pickup", "rejected", "pending_payment"),
])
def test_illegal_transitions_are_refused_with_a_conflict(kind, current, target):
    order = {"status": current, "fulfilment": {"type": kind}, "timeline": []}
    with pytest.raises(OrderError) as error:
        transition(order, target, "staff:x", NOW)
    assert error.value.code == "illegal-transition" and error.value.kind == CONFLICT
    assert isinstance(error.value, Refusal)  # answered by the kit as problem+json, status from the kind
    assert order["status"] == current and order["timeline"] == []


def test_placing_takes_the_store_ownership_from_the_reservation():
    order = placed("pickup")
    assert order["status"] == "pending_payment"
    assert order["fulfilment"] == {"type": "pickup", "location_id": "loc_a", "ownership": "franchise",
                                   "franchisee_id": "frn_1"}
    assert order["store_ids"] == ["loc_a"]
    assert [e["status"] for e in order["timeline"]] == ["pending_payment"]


def test_a_paid_ship_order_is_allocated_and_asks_stock_for_nothing_after_the_payment():
    """Stock holds the goods longer on its own when it hears orders.order.confirmed."""
    order = placed("ship")
    change = pay(order)
    assert order["status"] == "allocated"
    assert change.events == ["confirmed", "allocated"]
    assert change.actions == []
    assert order["fulfilment"]["location_id"] == "loc_a"


def test_a_paid_in_store_order_completes_at_once_and_commits_stock():
    order = placed("in_store", benefits={"coupon_discount": 1000, "points_discount": 0})
    change = pay(order)
    assert order["status"] == "completed"
    assert change.events == ["confirmed", "completed"]
    assert change.actions == [saga.BENEFITS_COMMIT, saga.STOCK_COMMIT]
    assert [e["status"] for e in order["timeline"]] == ["pending_payment", "confirmed", "completed"]


def test_in_store_orders_are_sold_on_the_store_channel():
    with pytest.raises(OrderError) as error:
        domain.new_order("ord_2", member_id=None, channel="app", fulfilment={"type": "in_store", "location_id": "l"},
                         lines=[], requested_lines=[], coupon_codes=[], points=0, attribution={}, created_by="x", now=NOW)
    assert error.value.code == "channel-mismatch"


def test_cancelling_a_paid_order_refunds_then_releases_benefits_then_stock():
    order = placed("pickup", benefits={"coupon_discount": 1000})
    pay(order)
    order["pending_actions"] = []
    change = domain.cancel(order, "member:mbr_1", "changed my mind", "rfn_1", NOW)
    assert order["status"] == "cancelled"
    assert change.actions == ["payment.refund:rfn_1", saga.BENEFITS_RELEASE, saga.STOCK_RELEASE]
    assert order["refunds"][0]["amount"] == 12000


def test_cancelling_an_unpaid_order_only_releases():
    order = placed("ship")
    change = domain.cancel(order, "system:expired", "payment window expired", "rfn_1", NOW)
    assert change.actions == [saga.STOCK_RELEASE]
    assert order["refunds"] == []


def test_a_shipped_order_cannot_be_cancelled():
    order = placed("ship")
    pay(order)
    domain.ship(order, "SF", "SF123", "staff:s", NOW)
    with pytest.raises(OrderError):
        domain.cancel(order, "member:mbr_1", "too late", "rfn_1", NOW)


def test_one_payment_at_a_time():
    order = placed("ship")
    domain.begin_payment(order, "pat_1", NOW)
    with pytest.raises(OrderError) as error:
        domain.begin_payment(order, "pat_2", NOW)
    assert error.value.code == "payment-in-progress"


def test_no_new_payment_while_the_outcome_of_a_timed_out_one_is_unknown():
    order = placed("ship")
    domain.begin_payment(order, "pat_1", NOW)
    domain.payment_failed(order, "pat_1", "unknown", "provider timeout", NOW)
    with pytest.raises(OrderError) as error:
        domain.begin_payment(order, "pat_2", NOW)
    assert error.value.code == "payment-in-progress"
    domain.payment_failed(order, "pat_1", "declined", "declined by callback", NOW)
    domain.begin_payment(order, "pat_3", NOW)


def test_a_stale_attempt_gives_way_to_a_new_one_and_is_remembered():
    order = placed("ship")
    domain.begin_payment(order, "pat_1", NOW, stale_after_ms=30_000)
    assert domain.payment_in_flight(order, NOW + timedelta(seconds=5), 30_000)
    assert domain.stale_attempt(order, NOW + timedelta(seconds=5), 30_000) is None
    later = NOW + timedelta(seconds=31)
    assert not domain.payment_in_flight(order, later, 30_000)
    assert domain.stale_attempt(order, later, 30_000)["id"] == "pat_1"
    domain.begin_payment(order, "pat_2", later, stale_after_ms=30_000)
    assert order["payment_attempt"]["id"] == "pat_2" and order["abandoned_attempts"] == ["pat_1"]


def test_an_expired_order_cannot_be_paid():
    order = placed("ship")
    later = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
    with pytest.raises(OrderError) as error:
        domain.begin_payment(order, "pat_1", later)
    assert error.value.code == "order-expired"


def test_partial_returns_then_full_return_refunds_everything():
    order = placed("pickup")
    pay(order)
    domain.ready_for_pickup(order, "staff:s", NOW, timedelta(days=3))
    assert order["collect_by_ms"] - order["ready_at_ms"] == 3 * 86_400_000
    domain.picked_up(order, "staff:s", NOW)
    assert order["status"] == "completed"
    first = domain.request_return(order, "ret_1", [{"sku_id": "sku_a", "qty": 1}], "too small", "member:mbr_1", NOW)
    assert first["refund_amount"] == 4500
    _, change = domain.receive_return(order, "ret_1", "loc_b", "rfn_1", "staff:s", NOW)
    assert change.actions == ["stock.return:ret_1", "payment.refund:rfn_1"]
    assert order["status"] == "completed"
    with pytest.raises(OrderError) as error:
        domain.request_return(order, "ret_2", [{"sku_id": "sku_a", "qty": 2}], "again", "member:mbr_1", NOW)
    assert error.value.code == "return-exceeds-purchase"
    second = domain.request_return(order, "ret_2", [{"sku_id": "sku_a", "qty": 1}, {"sku_id": "sku_b", "qty": 1}],
                                   "all of it", "member:mbr_1", NOW)
    domain.receive_return(order, "ret_2", "loc_b", "rfn_2", "staff:s", NOW)
    assert order["status"] == "refunded"
    assert first["refund_amount"] + second["refund_amount"] == TOTALS["total"]
    with pytest.raises(OrderError):
        domain.receive_return(order, "ret_2", "loc_b", "rfn_3", "staff:s", NOW)


def test_returns_need_a_completed_order_and_lines_from_it():
    order = placed("ship")
    with pytest.raises(OrderError) as error:
        domain.request_return(order, "ret_1", [{"sku_id": "sku_a", "qty": 1}], "x", "m", NOW)
    assert error.value.code == "not-returnable"


def test_checkout_plan_and_its_compensations():
    assert saga.checkout_steps([], 0) == [saga.RESERVE_STOCK]
    assert saga.checkout_steps(["C1"], 0) == [saga.RESERVE_STOCK, saga.HOLD_BENEFITS]
    assert saga.compensations([saga.RESERVE_STOCK, saga.HOLD_BENEFITS]) == [saga.BENEFITS_RELEASE, saga.STOCK_RELEASE]
    assert saga.compensations([]) == []


def test_rejection_compensates_what_was_started():
    order = domain.new_order("ord_9", member_id="m", channel="app", fulfilment={"type": "pickup", "location_id": "l"},
                             lines=[], requested_lines=[], coupon_codes=["C"], points=0, attribution={},
                             created_by="x", now=NOW)
    order["saga"]["started"] = [saga.RESERVE_STOCK, saga.HOLD_BENEFITS]
    change = domain.reject(order, "checkout interrupted", NOW)
    assert order["status"] == "rejected"
    assert change.actions == [saga.BENEFITS_RELEASE, saga.STOCK_RELEASE]


def test_finishing_an_action_removes_only_that_one():
    order = {"pending_actions": ["a", "b", "a"]}
    domain.finish_action(order, "a")
    assert order["pending_actions"] == ["b", "a"]
