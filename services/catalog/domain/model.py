"""Catalog domain core: pure rules, no I/O."""
from __future__ import annotations

from dataclasses import dataclass, field

CHANNELS = ("app", "mini_program", "marketplace", "store")
STATUSES = ("draft", "active", "archived")
TRANSITIONS = {"draft": {"active", "archived"}, "active": {"archived"}, "archived": set()}


class CatalogError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def check_status_change(current: str, target: str) -> None:
    if target not in TRANSITIONS.get(current, set()):
        raise CatalogError("illegal-transition", f"a {current} product cannot become {target}")


def check_channel_price(base: int, channel_price: int, band_pct: float) -> None:
    """A channel price stays within ±band_pct of the base price (integer fen, inclusive bounds)."""
    low = base * (100 - band_pct) / 100
    high = base * (100 + band_pct) / 100
    if not low <= channel_price <= high:
        raise CatalogError("price-out-of-band",
                           f"channel price {channel_price} is outside ±{band_pct}% of base {base} ({low:.0f}..{high:.0f})")


@dataclass
class Product:
    id: str
    name: str
    category: str
    status: str = "draft"
    version: int = 0
    skus: list[dict] = field(default_factory=list)
