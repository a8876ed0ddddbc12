"""Request and response models of the orders API (what the handlers parse, what they answer).

Answers are described as `views.public_order` writes them: times are RFC 3339 strings, money integer fen,
and fields an order does not have yet are null."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from libs.models import CURSOR, LIMIT, Strict
from services.orders.domain.lifecycle import CHANNELS
# The parts an order shares with its events are described once, by the event models.
from services.orders.events import Allocation, Attribution, Fulfilment, Payment, ReturnLine, Totals

Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.:]+$")]
Code = Annotated[str, Field(min_length=1, max_length=64)]


# -- requests ---------------------------------------------------------------------------------------

class LineIn(Strict):
    sku_id: Id
    qty: int = Field(ge=1, le=99)


Text = Annotated[str, Field(max_length=200)]


class Address(Strict):
    """Where to ship; the coordinates route the order to the nearest store with stock. Every field is
    bounded and no others are taken: the address is copied into the order and into every order event."""
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    name: Text | None = None
    phone: Annotated[str, Field(max_length=32)] | None = None
    line1: Text | None = None
    line2: Text | None = None
    district: Annotated[str, Field(max_length=100)] | None = None
    city: Annotated[str, Field(max_length=100)] | None = None
    province: Annotated[str, Field(max_length=100)] | None = None
    postal_code: Annotated[str, Field(max_length=16)] | None = None
    country: Annotated[str, Field(max_length=64)] | None = None
    note: Text | None = None


class ShipTo(Strict):
    type: Literal["ship"]
    address: Address


class PickupAt(Strict):
    type: Literal["pickup"]
    location_id: Id


class InStore(Strict):
    type: Literal["in_store"]
    location_id: Id
    scanned_codes: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=50)


class AttributionIn(Strict):
    """Only the scan token membership gave this member when they scanned a QR code: membership says whose QR
    it was (a client naming a store, an assistant or a poster's QR code directly could steer commissions)."""
    scan_token: Annotated[str, Field(min_length=16, max_length=100, pattern=r"^[A-Za-z0-9_\-]+$")] | None = None


class OrderRequest(Strict):
    channel: Literal[CHANNELS]
    lines: list[LineIn] = Field(default_factory=list, max_length=50)
    fulfilment: ShipTo | PickupAt | InStore = Field(discriminator="type")
    coupon_codes: list[Code] = Field(default_factory=list, max_length=5)
    points: int = Field(default=0, ge=0, le=10_000_000)
    attribution: AttributionIn | None = None

    @model_validator(mode="after")
    def _something_to_buy(self):
        scanned = self.fulfilment.type == "in_store" and self.fulfilment.scanned_codes
        if not self.lines and not scanned:
            raise ValueError("an order needs lines (or, in store, scanned product codes)")
        return self


class PayRequest(Strict):
    method: Literal["card"] = "card"
    card_number: str = Field(min_length=12, max_length=23, pattern=r"^[0-9 ]+$")


class CancelRequest(Strict):
    reason: str = Field(default="cancelled by request", max_length=500)


class PickupRequest(Strict):
    code: str = Field(min_length=1, max_length=16)


class ShipRequest(Strict):
    carrier: str = Field(min_length=1, max_length=64)
    tracking_number: str = Field(min_length=1, max_length=64)


class ReturnProof(Strict):
    """What the customer brings to a counter: the return code from the member's app, or the payment reference."""
    return_code: str | None = Field(None, min_length=4, max_length=16, pattern=r"^[A-Za-z0-9]+$")
    payment_id: str | None = Field(None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def one_proof(self):
        if (self.return_code is None) == (self.payment_id is None):
            raise ValueError("a proof is either a return_code or a payment_id")
        return self


class ReturnRequest(Strict):
    lines: list[LineIn] = Field(min_length=1, max_length=50)
    reason: str = Field(min_length=1, max_length=500)
    location_id: Id | None = Field(None, description="the store the goods come back to (a counter names its own)")
    proof: ReturnProof | None = Field(None, description="needed when staff open the return at their counter")


class ReceiveReturn(Strict):
    location_id: Id
    proof: ReturnProof | None = Field(None, description="needed unless the return was opened at this counter "
                                                        "with the customer's proof")


class ListQuery(Strict):
    store_id: Id | None = None
    status: Annotated[str, Field(max_length=32)] | None = None
    todo: bool = False
    cursor: str | None = CURSOR
    limit: int = LIMIT


class PaymentCallback(BaseModel):
    """What the provider posts, signed (HMAC of the raw body); fields it adds are ignored."""
    model_config = ConfigDict(extra="ignore")
    order_id: Id
    attempt_id: Id
    status: Literal["succeeded", "failed"]
    payment_id: Id | None = None
    amount: int = Field(ge=0)
    fee: int = Field(default=0, ge=0)
    reason: str | None = Field(None, max_length=500)


# -- answers ----------------------------------------------------------------------------------------

class Open(BaseModel):
    """A part of the answer that may carry more fields than listed."""
    model_config = ConfigDict(extra="allow")


class CounterLineOut(BaseModel):
    """A line as a counter taking a return sees it."""
    sku_id: str
    product_id: str | None
    name: str | None
    category: str | None
    qty: int
    unit_price: int
    line_total: int | None


class OrderLineOut(CounterLineOut):
    subtotal: int | None
    discount: int | None
    points_discount: int | None


class PaymentAttemptOut(Open):
    """The last attempt to charge: charging, succeeded, declined, failed, or unknown (awaiting a callback)."""
    state: str
    started_at: str | None = Field(None, description="RFC 3339")
    reason: str | None = Field(None, description="why it was declined or failed")


class ShipmentOut(Open):
    carrier: str
    tracking_number: str
    shipped_at: str = Field(description="RFC 3339")


class CancellationOut(Open):
    reason: str
    actor: str


class PickupStateOut(BaseModel):
    failed_attempts: int
    locked: bool


class ReturnOut(Open):
    id: str
    status: Literal["requested", "received"]
    lines: list[ReturnLine]
    reason: str
    refund_amount: int = Field(description="fen refunded once the goods are received")
    requested_at: str = Field(description="RFC 3339")
    requested_by: str = Field(description="who asked, e.g. member:mbr_... or staff:stf_...")
    location_id: str | None = Field(None, description="the store receiving the goods")
    received_at: str | None = Field(None, description="RFC 3339")
    refund_id: str | None = None


class RefundOut(BaseModel):
    id: str
    amount: int = Field(description="fen")
    reason: Literal["cancel", "return", "late_payment"]
    return_id: str | None = Field(description="the return it pays back, for a return")
    state: Literal["pending", "done"]


class TimelineEntryOut(Open):
    """A status change, or (with `event`) something that happened without one (a pickup code refused...)."""
    status: str
    at: str = Field(description="RFC 3339")
    actor: str = Field(description="e.g. member:mbr_..., staff:stf_..., system:checkout")
    event: str | None = Field(None, description="what happened, when the status did not change")
    note: str | None = Field(None, description="a reason or a reference, e.g. the return id")


class OrderView(BaseModel):
    """An order as its caller may see it."""
    id: str
    status: str
    channel: str
    member_id: str | None
    fulfilment: Fulfilment
    allocations: list[Allocation]
    lines: list[OrderLineOut]
    totals: Totals | None
    coupon_codes: list[str]
    points: int = Field(description="points redeemed on this order (at most what was asked for: the share of an "
                                    "order points may pay is capped)")
    points_requested: int = Field(description="points the shopper asked to redeem")
    attribution: Attribution
    payment: Payment | None
    payment_attempt: PaymentAttemptOut | None
    expires_at: str | None = Field(description="the payment deadline (UTC), while the order awaits payment")
    collect_by: str | None = Field(None, description="a pickup order ready at the store: collect it before this "
                                                     "instant (UTC), else it is cancelled and refunded")
    created_at: str | None
    updated_at: str | None
    shipment: ShipmentOut | None
    cancellation: CancellationOut | None
    rejection: str | None
    pickup: PickupStateOut | None
    returns: list[ReturnOut]
    refunds: list[RefundOut]
    timeline: list[TimelineEntryOut]


class PickupCodeView(OrderView):
    """The order ready for pickup; in dev mode only, with the code notifications sends the buyer."""
    dev_pickup_code: str | None = None


class OrderPage(BaseModel):
    items: list[OrderView]
    next_cursor: str | None


class CounterReturnOut(BaseModel):
    id: str
    status: Literal["requested", "received"]
    lines: list[ReturnLine]
    refund_amount: int
    location_id: str | None


class CounterOrderView(BaseModel):
    """An order as a store counter taking its return sees it when it may not read the order: the lines and
    what was returned; no member, payment, attribution or timeline."""
    model_config = ConfigDict(extra="forbid")
    id: str
    status: str
    fulfilment_type: str
    lines: list[CounterLineOut]
    returns: list[CounterReturnOut]
    refunds: list[RefundOut]


class ReturnCodeOut(BaseModel):
    order_id: str
    return_code: str = Field(description="shown (or as a QR) at the store's counter; works once, until expires_at")
    expires_at: str = Field(description="RFC 3339")


# "return" is a Python keyword, so this answer's model is built from a mapping of its field names.
ReturnAnswer = create_model("ReturnAnswer", __doc__="The return recorded, and the order it belongs to (as the "
                                                    "caller may see it).",
                            **{"return": (ReturnOut, ...), "order": (OrderView | CounterOrderView, ...)})
