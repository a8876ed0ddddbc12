"""Integration events orders publishes (past tense; never renamed).

Every order event carries the whole picture other services need (lines with prices and costs, totals,
the fulfilling store with its ownership and franchisee, attribution, payment), so no consumer calls back.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from libs.bus import IntegrationEvent


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Fulfilment(_Part):
    type: str
    location_id: str | None = None
    ownership: str | None = None
    franchisee_id: str | None = None
    address: dict | None = None


class Line(_Part):
    sku_id: str
    product_id: str | None = None
    category: str | None = None
    qty: int
    unit_price: int
    cost_price: int = 0
    line_total: int
    discount: int
    points_discount: int = 0


class Totals(_Part):
    subtotal: int
    discount: int
    points_discount: int
    total: int


class Attribution(_Part):
    store_id: str | None = None
    staff_id: str | None = None
    campaign_id: str | None = None
    code: str | None = None


class Payment(_Part):
    provider: str
    payment_id: str
    amount: int
    fee: int = 0


class Allocation(_Part):
    location_id: str
    ownership: str | None = None
    franchisee_id: str | None = None
    lines: list[dict] = []


class OrderEvent(IntegrationEvent):
    order_id: str
    member_id: str | None
    channel: str
    status: str
    fulfilment: Fulfilment
    allocations: list[Allocation] = []
    lines: list[Line]
    totals: Totals
    attribution: Attribution
    payment: Payment | None = None
    coupon_codes: list[str] = []
    points_used: int = 0
    store_id: str | None = None
    franchisee_id: str | None = None


class OrderPlaced(OrderEvent):
    event_type = "orders.order.placed"
    expires_at: str


class OrderConfirmed(OrderEvent):
    """Paid."""
    event_type = "orders.order.confirmed"


class OrderAllocated(OrderEvent):
    event_type = "orders.order.allocated"


class OrderReadyForPickup(OrderEvent):
    """Carries no code (every consumer and the audit queue see this event): notifications asks orders for the
    code when it delivers the message."""
    event_type = "orders.order.ready_for_pickup"
    collect_by: str | None = Field(None, description="collect before this instant (UTC, RFC 3339), else the order "
                                                     "is cancelled and refunded")


class PickupCodeReissued(OrderEvent):
    """A manager reset the code; like ready_for_pickup, the new code is fetched by notifications, not carried."""
    event_type = "orders.pickup_code.reissued"


class OrderShipped(OrderEvent):
    event_type = "orders.order.shipped"
    carrier: str = Field(description="the carrier's name as the store entered it (e.g. SF Express)")
    tracking_number: str = Field(description="the carrier's tracking number, for the shopper's tracking link")


class OrderPickedUp(OrderEvent):
    event_type = "orders.order.picked_up"


class OrderCompleted(OrderEvent):
    event_type = "orders.order.completed"


class OrderCancelled(OrderEvent):
    event_type = "orders.order.cancelled"
    reason: str
    refund_amount: int = 0


class ReturnLine(_Part):
    sku_id: str
    product_id: str | None = None
    category: str | None = None
    qty: int
    unit_price: int
    refund: int


class OrderRejected(IntegrationEvent):
    """The checkout failed before the order was placed (sold out, coupon taken, a step timed out, or its
    process died). Stock and membership release whatever they hold for this order id, and keep the release:
    a reservation or hold for it that arrives later is refused. Nothing was sold, so it carries no lines."""
    event_type = "orders.order.rejected"
    order_id: str
    member_id: str | None
    channel: str
    fulfilment: Fulfilment
    reason: str = Field(description="why, as the problem type of the step that failed (e.g. sold-out)")


class ReturnRequested(OrderEvent):
    event_type = "orders.return.requested"
    return_id: str
    return_lines: list[ReturnLine]
    reason: str
    refund_amount: int


class ReturnReceived(OrderEvent):
    event_type = "orders.return.received"
    return_id: str
    return_lines: list[ReturnLine]
    location_id: str
    refund_amount: int


class OrderRefunded(OrderEvent):
    """Money went back to the payer (cancellation or return)."""
    event_type = "orders.order.refunded"
    refund_id: str = Field(description="our id of this refund (one per cancellation or return)")
    refund_amount: int = Field(description="fen given back by this refund")
    reason: str = Field(description="cancel | return | late_payment (paid after the order was cancelled)")
    return_id: str | None = Field(None, description="the return it pays back, when it is a return's refund")
    return_lines: list[ReturnLine] = Field(default_factory=list, description="what was returned, with refunds")
    provider_refund_id: str | None = Field(None, description="the payment provider's id of the refund")


def order_fields(order: dict) -> dict:
    """The common data of every order event, from the stored order."""
    fulfilment = order["fulfilment"]
    benefits = order.get("benefits") or {}
    return {
        "order_id": order["_id"], "member_id": order.get("member_id"), "channel": order["channel"],
        "status": order["status"], "fulfilment": fulfilment, "allocations": order.get("allocations") or [],
        "lines": order["lines"], "totals": order["totals"], "attribution": order.get("attribution") or {},
        "payment": order.get("payment"), "coupon_codes": order.get("coupon_codes", []),
        "points_used": int(benefits.get("points_used", 0) or 0),
        "store_id": fulfilment.get("location_id"), "franchisee_id": fulfilment.get("franchisee_id"),
    }


SIMPLE_EVENTS = {
    "confirmed": OrderConfirmed, "allocated": OrderAllocated, "picked_up": OrderPickedUp,
    "completed": OrderCompleted,
}
