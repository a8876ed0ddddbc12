"""Who may see and act on an order: pure rules over the caller's principal (no I/O).

Members see their own orders; store staff and franchisees the orders of their stores (fulfilling or
allocated); HQ and services everything. Anything else is answered 404, as if the order did not exist.
"""
from __future__ import annotations

from libs.principal import Principal

STAFF_ROLES = ("store_staff", "store_manager")


def is_staff(principal: Principal) -> bool:
    return principal.has(*STAFF_ROLES)


def can_see(principal: Principal, order: dict) -> bool:
    if principal.is_admin:
        return True
    if principal.member_id and order.get("member_id") == principal.member_id:
        return True
    if principal.has(*STAFF_ROLES, "franchisee"):
        return bool(principal.store_ids.intersection(order.get("store_ids") or []))
    return False


def is_owner(principal: Principal, order: dict) -> bool:
    return bool(principal.member_id) and order.get("member_id") == principal.member_id


def works_at_order_store(principal: Principal, order: dict) -> bool:
    """HQ, or staff (not a franchisee owner) of a store that fulfils the order."""
    return principal.is_admin or (is_staff(principal) and
                                  bool(principal.store_ids.intersection(order.get("store_ids") or [])))
