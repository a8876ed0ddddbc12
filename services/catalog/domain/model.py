"""Catalog domain core: pure rules, no I/O (statuses, one price with bounded channel prices, schedules)."""
from __future__ import annotations

from libs.clock import now_ms
from libs.ids import new_id
from libs.refusal import CONFLICT, INVALID, NOT_FOUND, Refusal

CHANNELS = ("app", "mini_program", "marketplace", "store")
STATUSES = ("draft", "active", "archived")
TRANSITIONS = {"draft": {"active", "archived"}, "active": {"archived"}, "archived": set()}
MAX_PRICE_FEN = 100_000_000  # 1,000,000 yuan: anything above is a typo, not a product


class CatalogError(Refusal):
    """A catalogue rule said no. Most are about what was asked (invalid); the kind says which they are."""

    default_kind = INVALID


def missing(what: str) -> CatalogError:
    return CatalogError("not-found", f"{what} not found", kind=NOT_FOUND)


def is_visible(product_status: str, staff: bool) -> bool:
    """Shoppers never see drafts; HQ (and services) see everything."""
    return staff or product_status != "draft"


def visible_statuses(requested: str | None, staff: bool) -> list[str]:
    """The statuses a listing may show: shoppers see what is on sale, HQ may filter any status."""
    if staff:
        return [requested] if requested else list(STATUSES)
    return ["active"] if requested in (None, "active") else []


def check_status_change(current: str, target: str) -> None:
    if target not in TRANSITIONS.get(current, set()):
        raise CatalogError("illegal-transition", f"a {current} product cannot become {target}", kind=CONFLICT)


def is_sellable(product_status: str) -> bool:
    return product_status == "active"


def price_band(base: int, band_pct: float) -> tuple[int, int]:
    """Inclusive bounds in fen of a channel price around `base` (rounded inward: never outside the band)."""
    low = -((-base * (100 - band_pct)) // 100)  # ceil
    high = (base * (100 + band_pct)) // 100  # floor
    return int(low), int(high)


def check_channel_price(base: int, channel_price: int, band_pct: float, channel: str = "channel") -> None:
    """A channel price stays within ±band_pct of the base price (integer fen, inclusive bounds)."""
    low, high = price_band(base, band_pct)
    if not low <= channel_price <= high:
        raise CatalogError("price-out-of-band",
                           f"{channel} price {channel_price} is outside ±{band_pct:g}% of base {base} ({low}..{high})")


def check_price(price: dict, band_pct: float) -> None:
    """A whole price: a positive integer base and channel prices within the band."""
    base = price.get("base")
    if not isinstance(base, int) or isinstance(base, bool) or not 0 < base <= MAX_PRICE_FEN:
        raise CatalogError("invalid-price", f"base price must be a positive integer number of fen, got {base!r}")
    for channel, amount in price.get("channels", {}).items():
        if channel not in CHANNELS:
            raise CatalogError("unknown-channel", f"unknown channel {channel!r}; channels are {', '.join(CHANNELS)}")
        check_channel_price(base, amount, band_pct, channel)


def apply_price_change(current: dict, change: dict, band_pct: float) -> dict:
    """The price after `change` ({"base"?, "channels"?: {channel: fen | None}}; None drops a channel price).

    The result is checked as a whole, so a new base that leaves an old channel price outside the band is
    refused: the brand never sells at an out-of-band price, even for a moment.
    """
    channels = dict(current.get("channels", {}))
    for channel, amount in (change.get("channels") or {}).items():
        if amount is None:
            channels.pop(channel, None)
        else:
            channels[channel] = amount
    new = {"base": change["base"] if change.get("base") is not None else current["base"], "channels": channels}
    check_price(new, band_pct)
    return new


def price_in_force(price: dict, schedules: list[dict], now_ms: int, band_pct: float) -> dict:
    """The price now: the stored one plus every pending scheduled change already due, in effective order.

    A due change that would be out of band is skipped (the scheduler rejects it too).
    """
    for schedule in sorted(schedules, key=lambda s: (s["effective_at_ms"], s["_id"])):
        if schedule["effective_at_ms"] <= now_ms:
            try:
                price = apply_price_change(price, schedule["change"], band_pct)
            except CatalogError:
                continue
    return price


def unit_price(price: dict, channel: str) -> int:
    """What a channel sells at: its own price when it has one, else the base."""
    return price.get("channels", {}).get(channel, price["base"])


def check_unique_barcodes(barcodes: list[str]) -> None:
    seen: set[str] = set()
    duplicates = sorted({b for b in barcodes if b in seen or seen.add(b)})
    if duplicates:
        raise CatalogError("duplicate-barcode", f"barcodes repeated in the request: {', '.join(duplicates)}")


def history_entry(sku: dict, before: dict | None, after: dict, effective_at_ms: int, actor: str, how: str,
                  schedule_id: str | None = None) -> dict:
    """One line of a SKU's price history: what the price was, what it became, when, by whom and how."""
    return {"_id": new_id("prh"), "sku_id": sku["_id"], "product_id": sku.get("product_id"), "before": before,
            "after": after, "effective_at_ms": effective_at_ms, "recorded_at_ms": now_ms(), "actor": actor,
            "how": how, "schedule_id": schedule_id}


def new_schedule(sku: dict, change: dict, effective_at_ms: int, actor: str) -> dict:
    """A price change waiting for its time."""
    return {"_id": new_id("psc"), "sku_id": sku["_id"], "product_id": sku["product_id"], "change": change,
            "effective_at_ms": effective_at_ms, "status": "pending", "actor": actor, "created_at_ms": now_ms()}
