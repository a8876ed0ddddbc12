"""The events are built from the stored order alone and carry what consumers need (no call-backs)."""
from datetime import UTC, datetime, timedelta

from services.orders import events as ev
from services.orders.domain import order as domain

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
LINES = [{"sku_id": "sku_a", "product_id": "prd_a", "name": "Tee", "category": "tees", "qty": 1, "unit_price": 9900,
          "base_price": 9900, "cost_price": 4200, "subtotal": 9900, "discount": 0, "points_discount": 0,
          "line_total": 9900}]


def guest_sale():
    order = domain.new_order("ord_1", member_id=None, channel="store",
                             fulfilment={"type": "in_store", "location_id": "loc_f"}, lines=LINES,
                             requested_lines=[], coupon_codes=[], points=0,
                             attribution={"store_id": "loc_f", "staff_id": "stf_1", "campaign_id": None, "code": None},
                             created_by="staff:stf_1", now=NOW)
    domain.place(order, lines=LINES, totals={"subtotal": 9900, "discount": 0, "points_discount": 0, "total": 9900},
                 reservation={"reservation_id": "rsv_1", "allocations": [
                     {"location_id": "loc_f", "ownership": "franchise", "franchisee_id": "frn_1",
                      "lines": [{"sku_id": "sku_a", "qty": 1}]}]},
                 benefits=None, expires_at=NOW + timedelta(minutes=15), now=NOW)
    return order


def test_a_placed_guest_sale_event_names_the_franchise_store():
    order = guest_sale()
    event = ev.OrderPlaced(**ev.order_fields(order), expires_at=order["expires_at"])
    data = event.model_dump(mode="json")
    assert data["member_id"] is None and data["payment"] is None
    assert data["fulfilment"] == {"type": "in_store", "location_id": "loc_f", "ownership": "franchise",
                                  "franchisee_id": "frn_1", "address": None}
    assert data["store_id"] == "loc_f" and data["franchisee_id"] == "frn_1"
    assert data["lines"][0]["cost_price"] == 4200 and data["lines"][0]["line_total"] == 9900
    assert data["attribution"]["staff_id"] == "stf_1"


def test_a_confirmed_event_carries_the_payment_with_its_fee():
    order = guest_sale()
    domain.confirm_payment(order, {"provider": "sandbox", "payment_id": "pay_1", "amount": 9900, "fee": 59},
                           "staff:stf_1", NOW)
    data = ev.OrderConfirmed(**ev.order_fields(order)).model_dump(mode="json")
    assert data["payment"] == {"provider": "sandbox", "payment_id": "pay_1", "amount": 9900, "fee": 59}
    assert data["status"] == "completed"  # in store: paid and completed in the same change
    assert ev.OrderConfirmed.event_type == "orders.order.confirmed"


def test_every_orders_event_of_the_design_is_published():
    models = [ev.OrderPlaced, ev.OrderConfirmed, ev.OrderAllocated, ev.OrderReadyForPickup, ev.PickupCodeReissued,
              ev.OrderShipped, ev.OrderPickedUp, ev.OrderCompleted, ev.OrderCancelled, ev.ReturnRequested,
              ev.ReturnReceived, ev.OrderRefunded]
    assert {m.event_type for m in models} == {
        "orders.order.placed", "orders.order.confirmed", "orders.order.allocated", "orders.order.ready_for_pickup",
        "orders.order.shipped", "orders.order.picked_up", "orders.order.completed", "orders.order.cancelled",
        "orders.return.requested", "orders.return.received", "orders.order.refunded",  # docs/ARCHITECTURE.md, events
        "orders.pickup_code.reissued"}
