"""What membership answers: stored documents turned into the API's shapes (times as RFC 3339 UTC)."""
from __future__ import annotations

from typing import Any

from libs.clock import now_ms, rfc3339
from services.membership.domain import members as member_rules

def public_member(m: dict[str, Any], identities: list[dict] | None = None) -> dict[str, Any]:
    body = {
        "id": m["_id"], "status": m["status"], "name": m.get("name"), "phone": m.get("phone"),
        "email": m.get("email"), "locale": m.get("locale"), "marketing_consent": bool(m.get("marketing_consent")),
        "tags": m.get("tags", []), "tier": m.get("tier", "member"), "points_balance": m.get("points_balance", 0),
        "dormant": bool(m.get("dormant")), "created_at": rfc3339(m.get("created_at_ms")),
        "attribution": attribution_of(m),
    }
    if m.get("status") == "merged":
        body["merged_into"] = m.get("merged_into")
    if identities is not None:
        body["identities"] = [{"kind": i["kind"], "value": i["value"], "verified": i.get("verified", False)}
                              for i in identities]
    return body


def attribution_of(m: dict[str, Any], now: int | None = None) -> dict[str, Any]:
    active = member_rules.binding_is_active(m, now if now is not None else now_ms())
    return {"member_id": m["_id"],
            "store_id": m.get("bound_store_id") if active else None,
            "staff_id": m.get("bound_staff_id") if active else None,
            "campaign_id": m.get("bound_campaign_id") if active else None,
            "bound_until": rfc3339(m.get("bound_until_ms")) if active else None}


def public_coupon(c: dict[str, Any]) -> dict[str, Any]:
    return {"code": c["_id"], "template_id": c["template_id"], "name": c.get("name"), "state": c["state"],
            "kind": c["kind"], "threshold": c.get("threshold", 0), "amount_off": c.get("amount_off"),
            "percent_off": c.get("percent_off"), "max_off": c.get("max_off"),
            "scope": {"type": c["scope_type"], "values": c.get("scope_values", [])}, "channel": c["channel"],
            "valid_from": rfc3339(c["valid_from_ms"]), "valid_until": rfc3339(c["valid_until_ms"]),
            "campaign_id": c.get("campaign_id"), "order_id": c.get("order_id")}


def public_template(t: dict[str, Any]) -> dict[str, Any]:
    return {"id": t["_id"], "name": t.get("name"), "kind": t["kind"], "threshold": t.get("threshold", 0),
            "amount_off": t.get("amount_off"), "percent_off": t.get("percent_off"), "max_off": t.get("max_off"),
            "scope": {"type": t["scope_type"], "values": t.get("scope_values", [])}, "channel": t["channel"],
            "valid_days": t.get("valid_days"), "valid_from": rfc3339(t.get("valid_from_ms")),
            "valid_until": rfc3339(t.get("valid_until_ms")), "per_member_limit": t.get("per_member_limit", 1),
            "total_cap": t["total_cap"], "issued_count": t.get("issued_count", 0), "status": t.get("status", "active")}


def public_campaign(c: dict[str, Any]) -> dict[str, Any]:
    return {"id": c["_id"], "name": c.get("name"), "tag": c.get("tag"),
            "coupon_template_id": c.get("coupon_template_id"), "status": c.get("status", "active")}


def public_qr(q: dict[str, Any]) -> dict[str, Any]:
    return {"code": q["_id"], "kind": q["kind"], "store_id": q.get("store_id"), "staff_id": q.get("staff_id"),
            "campaign_id": q.get("campaign_id"), "status": q.get("status", "active")}


def public_staff(s: dict[str, Any]) -> dict[str, Any]:
    return {"id": s["_id"], "username": s["username"], "name": s.get("name"), "roles": s["roles"],
            "store_ids": s.get("store_ids", []), "franchisee_id": s.get("franchisee_id"),
            "status": s.get("status", "active"), "password_change_required": bool(s.get("password_change_required"))}


def public_entry(e: dict[str, Any]) -> dict[str, Any]:
    return {"id": e["_id"], "kind": e["kind"], "amount": e["amount"], "order_id": e.get("order_id"),
            "at": rfc3339(e["at_ms"]), "expires_at": rfc3339(e.get("expires_at_ms"))}


def audience_entry(m: dict[str, Any]) -> dict[str, Any]:
    """A member as a campaign send needs it (contact and consent only)."""
    return {"id": m["_id"], "phone": m.get("phone"), "email": m.get("email"), "locale": m.get("locale"),
            "marketing_consent": bool(m.get("marketing_consent")), "tier": m.get("tier")}
