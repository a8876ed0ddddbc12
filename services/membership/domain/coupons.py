"""Coupon templates, discounts and the coupon lifecycle (issued -> locked -> redeemed | released | expired)."""
from __future__ import annotations

from typing import Any

from services.membership.domain.errors import CONFLICT, INVALID, MembershipError

DAY_MS = 86_400_000
ONLINE_CHANNELS = ("app", "mini_program", "marketplace")
IN_STORE_CHANNELS = ("store",)
COUPON_CHANNELS = ("online", "in_store", "any")
KINDS = ("amount_off", "percent_off")
SCOPES = ("all", "categories", "skus")

ISSUED, LOCKED, REDEEMED, EXPIRED = "issued", "locked", "redeemed", "expired"
TRANSITIONS = {ISSUED: {LOCKED, EXPIRED}, LOCKED: {REDEEMED, ISSUED}, REDEEMED: {ISSUED}, EXPIRED: set()}


def validate_template(t: dict[str, Any]) -> None:
    """A template must describe a discount that can be computed; raises on nonsense."""
    def bad(detail: str) -> MembershipError:
        return MembershipError("invalid-coupon-template", detail, kind=INVALID)

    if t["kind"] not in KINDS:
        raise bad(f"kind must be one of {', '.join(KINDS)}")
    if t["kind"] == "amount_off" and not t.get("amount_off", 0) > 0:
        raise bad("amount_off must be a positive number of fen")
    if t["kind"] == "percent_off":
        if not 0 < t.get("percent_off", 0) < 100:
            raise bad("percent_off must be between 1 and 99")
        if not t.get("max_off", 0) > 0:
            raise bad("a percent-off coupon needs a positive cap (max_off, fen)")
    if t.get("threshold", 0) < 0:
        raise bad("threshold cannot be negative")
    if t["scope_type"] not in SCOPES:
        raise bad(f"scope must be one of {', '.join(SCOPES)}")
    if t["scope_type"] != "all" and not t.get("scope_values"):
        raise bad(f"a {t['scope_type']} scope needs at least one value")
    if t["channel"] not in COUPON_CHANNELS:
        raise bad(f"channel must be one of {', '.join(COUPON_CHANNELS)}")
    if t.get("valid_days", 0) <= 0 and not t.get("valid_until_ms"):
        raise bad("a template needs valid_days or an end of validity")
    if t.get("per_member_limit", 1) < 1 or t.get("total_cap", 1) < 1:
        raise bad("per_member_limit and total_cap must be at least 1")


def coupon_validity(template: dict[str, Any], issued_at_ms: int) -> tuple[int, int]:
    """(valid_from_ms, valid_until_ms) of a coupon issued now from `template`."""
    start = max(issued_at_ms, template.get("valid_from_ms") or 0)
    until = issued_at_ms + template["valid_days"] * DAY_MS if template.get("valid_days") else template["valid_until_ms"]
    if template.get("valid_until_ms"):
        until = min(until, template["valid_until_ms"])
    return start, until


def check_issuable(template: dict[str, Any], now_ms: int) -> None:
    if template.get("status", "active") != "active":
        raise MembershipError("coupon-template-inactive", "this coupon template is not active", kind=CONFLICT)
    if template.get("valid_until_ms") and now_ms >= template["valid_until_ms"]:
        raise MembershipError("coupon-template-ended", "this coupon template has ended", kind=CONFLICT)


def channel_allows(coupon_channel: str, order_channel: str) -> bool:
    if coupon_channel == "any":
        return True
    if coupon_channel == "online":
        return order_channel in ONLINE_CHANNELS
    return order_channel in IN_STORE_CHANNELS


def in_scope(coupon: dict[str, Any], line: dict[str, Any]) -> bool:
    scope = coupon["scope_type"]
    if scope == "all":
        return True
    if scope == "categories":
        return line.get("category") in coupon["scope_values"]
    return line.get("sku_id") in coupon["scope_values"]


def discount_for(coupon: dict[str, Any], lines: list[dict[str, Any]], channel: str, now_ms: int) -> int:
    """The discount (fen) this coupon gives on `lines`; raises when it cannot be used on this order."""
    code = coupon["_id"]
    if coupon["state"] != ISSUED:
        raise MembershipError("coupon-unavailable", f"coupon {code} is {coupon['state']}", coupon_code=code, kind=CONFLICT)
    if not coupon["valid_from_ms"] <= now_ms < coupon["valid_until_ms"]:
        raise MembershipError("coupon-unavailable", f"coupon {code} is not valid now", coupon_code=code, kind=CONFLICT)
    if not channel_allows(coupon["channel"], channel):
        raise MembershipError("coupon-not-applicable", f"coupon {code} cannot be used on channel {channel}",
                              coupon_code=code, kind=INVALID)
    eligible = sum(line["unit_price"] * line["qty"] for line in lines if in_scope(coupon, line))
    if eligible <= 0 or eligible < coupon.get("threshold", 0):
        raise MembershipError("coupon-not-applicable",
                              f"coupon {code} needs {coupon.get('threshold', 0)} fen of eligible goods, order has {eligible}",
                              coupon_code=code, kind=INVALID)
    if coupon["kind"] == "amount_off":
        return min(coupon["amount_off"], eligible)
    return min(eligible * coupon["percent_off"] // 100, coupon["max_off"])


def eligible_skus(coupon: dict[str, Any], lines: list[dict[str, Any]]) -> list[str]:
    """The SKUs of `lines` this coupon applies to: its discount is shared over these lines only."""
    return [line["sku_id"] for line in lines if in_scope(coupon, line)]


def apply_coupons(coupons: list[dict[str, Any]], lines: list[dict[str, Any]], channel: str,
                  now_ms: int) -> list[dict[str, Any]]:
    """[{code, discount, sku_ids}] for every coupon, in order; `sku_ids` are the lines it may discount.

    At most one coupon per template on one order (a member holding three of the same cannot stack them).
    A coupon never takes more than its eligible goods have left after the coupons before it (counted as if
    those had all landed on the same lines), so orders can always share each discount over its own lines
    without a line going below zero, and the coupons together never exceed the order's subtotal.
    """
    seen_templates: set[str] = set()
    result: list[dict[str, Any]] = []
    granted = 0
    subtotal = sum(line["unit_price"] * line["qty"] for line in lines)
    for coupon in coupons:
        if coupon["template_id"] in seen_templates:
            raise MembershipError("coupon-not-stackable",
                                  f"only one coupon of template {coupon['template_id']} per order", kind=INVALID)
        seen_templates.add(coupon["template_id"])
        skus = eligible_skus(coupon, lines)
        eligible = sum(line["unit_price"] * line["qty"] for line in lines if line["sku_id"] in skus)
        discount = max(0, min(discount_for(coupon, lines, channel, now_ms), eligible - granted, subtotal - granted))
        granted += discount
        result.append({"code": coupon["_id"], "discount": discount, "sku_ids": skus})
    return result


def transition(coupon: dict[str, Any], target: str) -> None:
    if target not in TRANSITIONS.get(coupon["state"], set()):
        raise MembershipError("coupon-unavailable",
                              f"coupon {coupon['_id']} cannot go from {coupon['state']} to {target}",
                              coupon_code=coupon["_id"], kind=CONFLICT)
