"""What settlement needs to know about an order, read defensively from the orders events.

Orders owns the event shapes (libs/README.md "Events"); settlement tolerates missing optional parts and
falls back to its own copy of the locations for ownership and franchisee when the event omits them.
A missing order id, missing lines or a negative amount make the event unusable (InvalidOrderEvent).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from services.settlement.domain.money import allocate


class InvalidOrderEvent(ValueError):
    """The event lacks what a posting needs; it goes to the dead-letter queue after the retries."""


class SaleNotPostedYet(RuntimeError):
    """A return's refund arrived before the sale it reverses (the completed event is being retried):
    failing sends the refund round the retry queue until the sale is posted."""


@dataclass(frozen=True)
class LocationInfo:
    id: str
    kind: str = "store"  # store | warehouse
    ownership: str = "direct"  # direct | franchise
    franchisee_id: str | None = None


@dataclass(frozen=True)
class OrderLine:
    sku_id: str
    qty: int
    gross: int  # qty x unit price
    discount: int
    cost_price: int  # per unit
    net: int  # what the customer paid for this line, after every discount (see parse_order)
    product_id: str | None = None
    category: str | None = None
    location: LocationInfo | None = None  # where these units were fulfilled from


@dataclass(frozen=True)
class Payment:
    provider: str
    payment_id: str | None
    amount: int
    fee: int | None  # the provider's actual fee when the event carries it


@dataclass(frozen=True)
class OrderFacts:
    order_id: str
    channel: str
    fulfilment_type: str
    location: LocationInfo | None
    lines: tuple[OrderLine, ...]
    net_total: int
    payment: Payment
    member_id: str | None = None
    staff_id: str | None = None
    attributed_store_id: str | None = None
    campaign_id: str | None = None


def _int(value, name: str, default: int | None = None) -> int:
    if value is None:
        if default is None:
            raise InvalidOrderEvent(f"{name} is missing")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise InvalidOrderEvent(f"{name} must be an integer number of fen, got {value!r}")
    return int(value)


def _dict(value) -> Mapping:
    return value if isinstance(value, Mapping) else {}


def resolve_location(fulfilment: Mapping, known: Mapping[str, LocationInfo]) -> LocationInfo | None:
    """The fulfilling location: the event's own ownership data first, the local copy for what it lacks."""
    location_id = fulfilment.get("location_id")
    if not location_id:
        return None
    local = known.get(location_id)
    ownership = fulfilment.get("ownership") or (local.ownership if local else "direct")
    franchisee_id = fulfilment.get("franchisee_id") or (local.franchisee_id if local else None)
    kind = fulfilment.get("location_kind") or (local.kind if local else "store")
    return LocationInfo(id=location_id, kind=kind, ownership=ownership, franchisee_id=franchisee_id)


def parse_order(data: Mapping, known_locations: Mapping[str, LocationInfo] | None = None) -> OrderFacts:
    """Order facts from an orders event's data.

    Line nets: each line's own net (qty x unit price - line discount) is the weight with which the order's
    net total (totals.total, i.e. after order-level discounts and points) is spread over the lines by the
    largest-remainder rule, so the line nets always add up to the order's net amount to the fen.
    """
    order_id = data.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise InvalidOrderEvent("order_id is missing")
    raw_lines = data.get("lines")
    if not isinstance(raw_lines, list) or not raw_lines:
        raise InvalidOrderEvent(f"order {order_id} carries no lines")
    parsed = []
    for index, raw in enumerate(raw_lines):
        raw = _dict(raw)
        sku_id = raw.get("sku_id")
        if not sku_id:
            raise InvalidOrderEvent(f"line {index} has no sku_id")
        qty = _int(raw.get("qty"), f"lines[{index}].qty")
        if qty <= 0:
            raise InvalidOrderEvent(f"lines[{index}].qty must be positive")
        # Coupon and points discounts already spread over the lines by orders (both reduce what was paid).
        discount = _int(raw.get("discount"), f"lines[{index}].discount", 0) + \
            _int(raw.get("points_discount"), f"lines[{index}].points_discount", 0)
        unit_price = raw.get("unit_price")
        # Without a unit price, line_total is what orders means by it: the line after its discounts.
        gross = qty * _int(unit_price, f"lines[{index}].unit_price") if unit_price is not None else \
            _int(raw.get("line_total"), f"lines[{index}].line_total") + discount
        cost_price = _int(raw.get("cost_price"), f"lines[{index}].cost_price", 0)
        if gross < 0 or discount < 0 or cost_price < 0:
            raise InvalidOrderEvent(f"lines[{index}] has a negative amount")
        parsed.append((str(sku_id), qty, gross, discount, cost_price, raw))
    own_nets = [max(0, gross - discount) for _, _, gross, discount, _, _ in parsed]

    totals, payment_raw = _dict(data.get("totals")), _dict(data.get("payment"))
    if totals.get("total") is not None:
        net_total = _int(totals.get("total"), "totals.total")
    elif payment_raw.get("amount") is not None:
        net_total = _int(payment_raw.get("amount"), "payment.amount")
    else:
        net_total = sum(own_nets)
    if net_total < 0:
        raise InvalidOrderEvent("the order total cannot be negative")
    nets = allocate(net_total, own_nets)
    fulfilment = _dict(data.get("fulfilment"))
    known = known_locations or {}
    allocations = [_dict(item) for item in data.get("allocations") or [] if _dict(item).get("location_id")]
    primary = resolve_location(fulfilment, known) or (resolve_location(allocations[0], known) if allocations else None)
    lines = []
    for (sku_id, qty, gross, discount, cost_price, raw), net in zip(parsed, nets):
        parts = _fulfilled_from(sku_id, qty, allocations, primary, known)
        weights = [part_qty for _, part_qty in parts]
        for (location, part_qty), part_gross, part_discount, part_net in zip(
                parts, allocate(gross, weights), allocate(discount, weights), allocate(net, weights)):
            lines.append(OrderLine(sku_id=sku_id, qty=part_qty, gross=part_gross, discount=part_discount,
                                   cost_price=cost_price, net=part_net, product_id=raw.get("product_id"),
                                   category=raw.get("category"), location=location))

    fee = payment_raw.get("fee")
    payment = Payment(provider=str(payment_raw.get("provider") or "unknown"),
                      payment_id=payment_raw.get("payment_id"),
                      amount=_int(payment_raw.get("amount"), "payment.amount", net_total),
                      fee=_int(fee, "payment.fee") if fee is not None else None)
    if payment.fee is not None and payment.fee < 0:
        raise InvalidOrderEvent("payment.fee cannot be negative")
    attribution = _dict(data.get("attribution"))
    return OrderFacts(order_id=order_id, channel=str(data.get("channel") or "app"),
                      fulfilment_type=str(fulfilment.get("type") or "ship"), location=primary, lines=tuple(lines),
                      net_total=net_total, payment=payment, member_id=data.get("member_id"),
                      staff_id=attribution.get("staff_id") or None,
                      attributed_store_id=attribution.get("store_id") or None,
                      campaign_id=attribution.get("campaign_id") or None)


def _fulfilled_from(sku_id: str, qty: int, allocations: list[Mapping], primary: LocationInfo | None,
                    known: Mapping[str, LocationInfo]) -> list[tuple[LocationInfo | None, int]]:
    """Which locations the units of a line left from: stock's allocations when the order was split over
    several locations, the fulfilling location otherwise (and for any units the allocations do not cover)."""
    if len({item["location_id"] for item in allocations}) < 2:
        return [(primary, qty)]
    parts, left = [], qty
    for item in allocations:
        for line in item.get("lines") or []:
            line = _dict(line)
            if line.get("sku_id") != sku_id or left == 0:
                continue
            take = min(left, _int(line.get("qty"), "allocations.lines.qty", 0))
            if take > 0:
                parts.append((resolve_location(item, known), take))
                left -= take
    if left:
        parts.append((primary, left))
    return parts


@dataclass(frozen=True)
class RefundLine:
    sku_id: str
    qty: int
    amount: int | None


@dataclass(frozen=True)
class RefundFacts:
    order_id: str
    refund_ref: str | None  # refund / return id that makes one refund of an order distinct from another
    lines: tuple[RefundLine, ...]  # empty: the whole order
    amount: int
    payment_id: str | None = None
    return_id: str | None = None  # set when goods came back: only a completed (settled) sale has returns


def parse_refund(data: Mapping) -> RefundFacts:
    order_id = data.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise InvalidOrderEvent("order_id is missing")
    lines = []
    # orders' refunded event carries the whole order in `lines` and the refunded ones in `return_lines`
    # (empty for a cancellation: everything); a bare refund event carries the refunded ones in `lines`.
    refunded = data.get("return_lines") if "return_lines" in data else data.get("lines")
    for index, raw in enumerate(refunded or []):
        raw = _dict(raw)
        if not raw.get("sku_id"):
            raise InvalidOrderEvent(f"refunded line {index} has no sku_id")
        qty = _int(raw.get("qty"), f"lines[{index}].qty")
        if qty <= 0:
            raise InvalidOrderEvent(f"refunded lines[{index}].qty must be positive")
        amount = next((raw.get(key) for key in ("refund", "amount", "refund_amount") if raw.get(key) is not None),
                      None)
        lines.append(RefundLine(str(raw["sku_id"]), qty, _int(amount, f"lines[{index}].amount")
                                if amount is not None else None))
    refund = _dict(data.get("refund"))
    amount = next((value for value in (data.get("amount"), data.get("refund_amount"), refund.get("amount"))
                   if value is not None), None)
    if amount is None:
        if not lines or any(line.amount is None for line in lines):
            raise InvalidOrderEvent("the refund amount is missing")
        amount = sum(line.amount for line in lines)
    amount = _int(amount, "refund amount")
    if amount < 0:
        raise InvalidOrderEvent("the refund amount cannot be negative")
    reference = next((value for value in (data.get("refund_id"), refund.get("refund_id"), data.get("return_id"),
                                          refund.get("id")) if value), None)
    return RefundFacts(order_id=order_id, refund_ref=reference, lines=tuple(lines), amount=amount,
                       payment_id=_dict(data.get("payment")).get("payment_id") or refund.get("payment_id"),
                       return_id=data.get("return_id") or None)


def occurred(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
