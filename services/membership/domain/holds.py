"""Checkout holds of orders: held -> committed | released; a release may come first (a tombstone) and is sticky.

A hold lives `ttl_s` (orders' payment window plus a margin); a hold still `held` past its expiry is released
by the sweep, exactly as if orders had released it. A committed hold never expires.
"""
from __future__ import annotations

from typing import Any

from services.membership.domain.errors import CONFLICT, INVALID, MembershipError

HELD, COMMITTED, RELEASED, REFUNDED = "held", "committed", "released", "refunded"
# Why a hold was released: orders asked, the sweep found it expired, or the release came before any hold.
BY_ORDER, BY_EXPIRY = "order", "expired"


def hold_released(order_id: str) -> MembershipError:
    return MembershipError("hold-released", f"the checkout hold of order {order_id} was released (order cancelled, "
                           "expired or refunded); it cannot be held or committed again", kind=CONFLICT,
                           order_id=order_id)


def expiry_ms(now_ms: int, ttl_s: int | None, default_ttl_s: int, max_ttl_s: int) -> int:
    """When a hold made now lets go: the caller's `ttl_s`, else the default; never beyond the maximum."""
    ttl = default_ttl_s if ttl_s is None else ttl_s
    if ttl <= 0 or ttl > max_ttl_s:
        raise MembershipError("validation-error", f"ttl_s must be between 1 and {max_ttl_s}", kind=INVALID)
    return now_ms + ttl * 1000


def tombstone(order_id: str, now_ms: int) -> dict[str, Any]:
    """What a release of an order that holds nothing leaves behind, so a late hold of that order is refused."""
    return {"_id": order_id, "member_id": None, "requested_member_id": None, "state": RELEASED,
            "release_reason": BY_ORDER, "tombstone": True, "coupon_codes": [], "points_used": 0,
            "points_returned": 0, "response": None, "created_at_ms": now_ms, "released_at_ms": now_ms,
            "expires_at_ms": None}


def check_holdable(existing: dict[str, Any]) -> None:
    """A hold request for an order that already has a record: a released one (or a tombstone) is refused."""
    if existing["state"] == RELEASED:
        raise hold_released(existing["_id"])


def check_committable(hold: dict[str, Any]) -> None:
    if hold["state"] in (RELEASED, REFUNDED):
        raise hold_released(hold["_id"])


def is_expired(hold: dict[str, Any], now_ms: int) -> bool:
    """Only a hold still `held` expires; a committed one stays whatever its expiry says."""
    expires = hold.get("expires_at_ms")
    return hold["state"] == HELD and expires is not None and expires <= now_ms
