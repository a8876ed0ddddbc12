"""Member rules: QR scans (tags, first-touch binding, campaign coupon), merging, dormancy. Pure."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DAY_MS = 86_400_000
QR_KINDS = ("store", "staff", "campaign")
IDENTITY_KINDS = ("phone", "wechat_openid", "wechat_unionid", "marketplace_buyer_id", "email")


@dataclass
class ScanOutcome:
    tags: list[str]
    bind: bool
    store_id: str | None
    staff_id: str | None
    campaign_id: str | None
    bound_until_ms: int | None
    grant_campaign_id: str | None


def scan_tags(qr: dict[str, Any], campaign: dict[str, Any] | None) -> list[str]:
    tags = []
    if qr.get("store_id"):
        tags.append(f"store:{qr['store_id']}")
    if qr.get("staff_id"):
        tags.append(f"staff:{qr['staff_id']}")
    if campaign is not None:
        tags.append(f"campaign:{campaign['_id']}")
        if campaign.get("tag"):
            tags.append(campaign["tag"])
    tags.extend(qr.get("tags") or [])
    return list(dict.fromkeys(tags))


def binding_is_active(member: dict[str, Any], now_ms: int) -> bool:
    return bool(member.get("bound_store_id") or member.get("bound_staff_id")) and member.get("bound_until_ms", 0) > now_ms


def scan(member: dict[str, Any], qr: dict[str, Any], campaign: dict[str, Any] | None, now_ms: int,
         binding_days: int) -> ScanOutcome:
    """What a scan of `qr` does to `member`: tags always; binding only on first touch (or after it lapsed)."""
    bindable = bool(qr.get("store_id") or qr.get("staff_id"))
    bind = bindable and not binding_is_active(member, now_ms)
    return ScanOutcome(
        tags=scan_tags(qr, campaign), bind=bind,
        store_id=qr.get("store_id") if bind else None, staff_id=qr.get("staff_id") if bind else None,
        campaign_id=(campaign or {}).get("_id") if bind else None,
        bound_until_ms=now_ms + binding_days * DAY_MS if bind else None,
        grant_campaign_id=(campaign or {}).get("_id") if campaign and campaign.get("coupon_template_id") else None)


HOUR_MS = 3_600_000
NOT_PRESENT = "member-not-present"


def for_staff_scan(outcome: ScanOutcome) -> ScanOutcome:
    """A scan the member did not make themselves (staff naming their channel identity) tags and binds, but
    issues no campaign coupon: a made-up identity must not take one. The coupon waits for the member's own scan."""
    outcome.grant_campaign_id = None
    return outcome


def hour_window(now_ms: int) -> int:
    """The hour a staff member's identity scans are counted in."""
    return now_ms // HOUR_MS


def retry_after_s(now_ms: int) -> int:
    return max(1, ((hour_window(now_ms) + 1) * HOUR_MS - now_ms + 999) // 1000)


def claimable_by(identity: dict[str, Any], member_id: str) -> bool:
    """A channel identity that staff named for another member (never verified, never linked by its member)
    yields to the member who links it themselves: naming someone's openid first must not squat it."""
    return (identity.get("member_id") != member_id and not identity.get("verified")
            and str(identity.get("named_by") or "").startswith("staff:"))


def merge(survivor: dict[str, Any], absorbed: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """The survivor after absorbing `absorbed`: union of tags, earliest active binding, latest consent, sums."""
    merged = dict(survivor)
    merged["tags"] = list(dict.fromkeys([*(survivor.get("tags") or []), *(absorbed.get("tags") or [])]))
    candidates = [m for m in (survivor, absorbed) if binding_is_active(m, now_ms)]
    if candidates:
        first = min(candidates, key=lambda m: m.get("bound_at_ms", 0))
        for key in ("bound_store_id", "bound_staff_id", "bound_campaign_id", "bound_at_ms", "bound_until_ms"):
            merged[key] = first.get(key)
    if (absorbed.get("marketing_consent_at_ms") or 0) > (survivor.get("marketing_consent_at_ms") or 0):
        merged["marketing_consent"] = absorbed.get("marketing_consent", False)
        merged["marketing_consent_at_ms"] = absorbed.get("marketing_consent_at_ms")
    for key in ("name", "email"):
        if not merged.get(key) and absorbed.get(key):
            merged[key] = absorbed[key]
    merged["points_balance"] = survivor.get("points_balance", 0) + absorbed.get("points_balance", 0)
    merged["order_count"] = survivor.get("order_count", 0) + absorbed.get("order_count", 0)
    merged["last_activity_ms"] = max(survivor.get("last_activity_ms", 0), absorbed.get("last_activity_ms", 0))
    merged["created_at_ms"] = min(survivor.get("created_at_ms", now_ms), absorbed.get("created_at_ms", now_ms))
    merged["dormant"] = survivor.get("dormant", False) and absorbed.get("dormant", False)
    return merged


def choose_survivor(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The older member survives (its id is the one other systems have seen longest)."""
    return (a, b) if (a.get("created_at_ms", 0), a["_id"]) <= (b.get("created_at_ms", 0), b["_id"]) else (b, a)


def is_dormant(last_activity_ms: int, now_ms: int, dormant_after_days: int) -> bool:
    return now_ms - last_activity_ms >= dormant_after_days * DAY_MS


def average_basket(spend_fen: int, order_count: int) -> int:
    return spend_fen // order_count if order_count else 0


def repeat_purchase_rate(buyers: int, repeat_buyers: int) -> float:
    return round(repeat_buyers / buyers, 4) if buyers else 0.0


def top_categories(category_units: dict[str, int], limit: int = 5) -> list[dict[str, Any]]:
    ranked = sorted(category_units.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
    return [{"category": c, "units": u} for c, u in ranked]
