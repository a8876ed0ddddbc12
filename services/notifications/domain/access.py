"""Who may see which deliveries. Pure: looks at the caller's identity only."""
from __future__ import annotations

from libs.principal import Principal


def visible_recipients(principal: Principal) -> set[str] | None:
    """Recipients a caller may see the deliveries of; None means every one (HQ and services)."""
    if principal.is_admin:
        return None
    visible: set[str] = set()
    if principal.member_id:
        visible.add(principal.member_id)
    if principal.has("store_manager", "store_staff"):
        visible.update(f"store:{store_id}" for store_id in principal.store_ids)
    if principal.franchisee_id:
        visible.add(f"franchisee:{principal.franchisee_id}")
    return visible
