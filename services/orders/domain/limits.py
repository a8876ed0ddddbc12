"""Quantity limits of limited (flash-sale) SKUs: at most `per_order` units in one order and `per_member`
units across a member's live orders, so one unpaid order, or one buyer, cannot hold a store's stock."""
from __future__ import annotations

from libs.refusal import CONFLICT, INVALID
from services.orders.domain.lifecycle import CANCELLED, REJECTED, OrderError

# Orders that no longer hold or own anything do not count against a member's limit.
NOT_COUNTED = (REJECTED, CANCELLED)


def units_by_sku(lines: list[dict]) -> dict[str, int]:
    units: dict[str, int] = {}
    for line in lines:
        units[line["sku_id"]] = units.get(line["sku_id"], 0) + int(line["qty"])
    return units


def check_per_order(lines: list[dict], limits: dict[str, dict]) -> None:
    for sku_id, qty in units_by_sku(lines).items():
        cap = (limits.get(sku_id) or {}).get("per_order")
        if cap is not None and qty > cap:
            raise OrderError("quantity-limit", f"at most {cap} of {sku_id} per order", kind=INVALID,
                             sku_id=sku_id, limit=cap)


def check_per_member(lines: list[dict], limits: dict[str, dict], member_orders: list[dict]) -> None:
    """`member_orders`: the member's orders (status and lines) as stored."""
    held: dict[str, int] = {}
    for order in member_orders:
        if order.get("status") not in NOT_COUNTED:
            for sku_id, qty in units_by_sku(order.get("lines") or []).items():
                held[sku_id] = held.get(sku_id, 0) + qty
    for sku_id, qty in units_by_sku(lines).items():
        cap = (limits.get(sku_id) or {}).get("per_member")
        if cap is not None and held.get(sku_id, 0) + qty > cap:
            raise OrderError("member-limit-reached", f"at most {cap} of {sku_id} per member", kind=CONFLICT,
                             sku_id=sku_id, limit=cap)
