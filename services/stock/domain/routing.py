"""Order routing (订单分配): which location(s) serve a reservation, and why. Pure: no I/O.

Rules:
- `in_store`: the named store sells from its own shelf; safety stock does not apply (it exists for
  walk-in customers). Rejected with the nearest stores that do have the goods.
- `pickup`: the named store must offer pickup and have the goods above its safety stock. Rejected with
  the nearest pickup stores that do have them.
- `ship`: among locations that ship, sell online, have daily capacity left and have goods above their
  safety stock, one location closest to the destination when one can serve the whole order; otherwise the
  fewest splits (bounded by `max_splits`), the smallest total distance breaking ties.
The decision lists every candidate with its distance and what excluded it, so support can answer "why".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations
from typing import NamedTuple

MODES = ("ship", "pickup", "in_store")
EARTH_RADIUS_M = 6_371_000
# Split search looks at this many nearest eligible locations: bounds the combinations explored.
SPLIT_SEARCH_WIDTH = 10


class Point(NamedTuple):
    """A place on the map, in degrees."""
    lat: float
    lng: float


@dataclass(frozen=True)
class Site:
    """A location as routing sees it."""
    id: str
    kind: str  # store | warehouse
    lat: float
    lng: float
    ownership: str = "direct"
    franchisee_id: str | None = None
    pickup: bool = True
    ship: bool = True
    sell_online: bool = True
    active: bool = True
    daily_capacity: int = 0
    safety_stock: int = 0


@dataclass(frozen=True)
class Line:
    """One line of an order: so many units of one SKU."""
    sku_id: str
    qty: int


@dataclass(frozen=True)
class Allocation:
    location_id: str
    lines: tuple[Line, ...]


@dataclass
class Candidate:
    location_id: str
    distance_m: int | None
    sellable: dict[str, int]
    excluded: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"location_id": self.location_id, "distance_m": self.distance_m, "sellable": dict(self.sellable),
                "excluded": list(self.excluded)}


@dataclass
class Decision:
    mode: str
    allocations: list[Allocation]
    candidates: list[Candidate]
    strategy: str  # named_store | single_location | split | rejected
    reason: str | None = None  # why rejected
    nearest: list[dict] = field(default_factory=list)  # stores that do have it (pickup / in_store rejections)

    @property
    def accepted(self) -> bool:
        return bool(self.allocations)

    def explain(self) -> dict:
        return {"mode": self.mode, "strategy": self.strategy, "reason": self.reason,
                "candidates": [c.as_dict() for c in self.candidates],
                "chosen": [a.location_id for a in self.allocations]}


def distance_m(a: Point, b: Point) -> int:
    """Great-circle distance in metres (haversine)."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    dphi = phi2 - phi1
    dlmb = math.radians(b.lng - a.lng)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return int(round(2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))))


def merge_lines(lines: list[Line]) -> list[Line]:
    """One line per SKU (quantities of repeated SKUs added), in first-seen order."""
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.sku_id] = totals.get(line.sku_id, 0) + line.qty
    return [Line(sku, qty) for sku, qty in totals.items()]


def sellable(site: Site, available: int, mode: str) -> int:
    """What a reservation in `mode` may take: safety stock is kept back from online sale only."""
    held_back = 0 if mode == "in_store" else site.safety_stock
    return max(0, available - held_back)


def serves_mode(site: Site, mode: str) -> bool:
    """Whether the location takes part in `mode` at all (stock and capacity aside)."""
    if not site.active:
        return False
    if mode == "ship":
        return site.ship and site.sell_online
    if mode == "pickup":
        return site.pickup and site.sell_online and site.kind == "store"
    return site.kind == "store"


def route(mode: str, lines: list[Line], sites: list[Site], stock: dict[tuple[str, str], int], *,
          capacity_used: dict[str, int] | None = None, location_id: str | None = None,
          destination: Point | None = None, max_splits: int = 3, nearest_limit: int = 5) -> Decision:
    """Decide where a reservation is served. `stock[(location_id, sku_id)]` is the available quantity."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    lines = merge_lines(lines)
    if mode == "ship":
        return _route_ship(lines, sites, stock, capacity_used or {}, destination, max_splits)
    return _route_named_store(mode, lines, sites, stock, location_id, nearest_limit)


def _sellable_map(site: Site, lines: list[Line], stock: dict[tuple[str, str], int], mode: str) -> dict[str, int]:
    return {line.sku_id: sellable(site, stock.get((site.id, line.sku_id), 0), mode) for line in lines}


def _shortages(lines: list[Line], have: dict[str, int]) -> list[str]:
    return [f"short:{line.sku_id}" for line in lines if have.get(line.sku_id, 0) < line.qty]


def _route_named_store(mode: str, lines: list[Line], sites: list[Site], stock: dict[tuple[str, str], int],
                       location_id: str | None, nearest_limit: int) -> Decision:
    by_id = {site.id: site for site in sites}
    store = by_id.get(location_id or "")
    if store is None:
        return Decision(mode, [], [], "rejected", reason="unknown-location")
    candidate = Candidate(store.id, 0, _sellable_map(store, lines, stock, mode))
    if not store.active:
        candidate.excluded.append("inactive")
    if store.kind != "store":
        candidate.excluded.append("not-a-store")  # nobody picks up or pays at a warehouse counter
    if mode == "pickup" and not store.pickup:
        candidate.excluded.append("no-pickup")
    if mode == "pickup" and not store.sell_online:
        candidate.excluded.append("not-selling-online")
    candidate.excluded.extend(_shortages(lines, candidate.sellable))
    if not candidate.excluded:
        return Decision(mode, [Allocation(store.id, tuple(lines))], [candidate], "named_store")
    here = Point(store.lat, store.lng)
    alternatives = []
    for other in sites:
        if other.id == store.id or not other.active or other.kind != "store":
            continue
        if mode == "pickup" and not (other.pickup and other.sell_online):
            continue
        have = _sellable_map(other, lines, stock, mode)
        if not _shortages(lines, have):
            alternatives.append({"location_id": other.id, "distance_m": distance_m(here, Point(other.lat, other.lng)),
                                 "available": have})
    alternatives.sort(key=lambda a: (a["distance_m"], a["location_id"]))
    reason = "sold-out" if any(r.startswith("short:") for r in candidate.excluded) else "location-cannot-serve"
    return Decision(mode, [], [candidate], "rejected", reason=reason, nearest=alternatives[:nearest_limit])


def _route_ship(lines: list[Line], sites: list[Site], stock: dict[tuple[str, str], int],
                capacity_used: dict[str, int], destination: Point | None, max_splits: int) -> Decision:
    candidates: list[Candidate] = []
    for site in sites:
        dist = distance_m(destination, Point(site.lat, site.lng)) if destination else None
        candidate = Candidate(site.id, dist, _sellable_map(site, lines, stock, "ship"))
        if not site.active:
            candidate.excluded.append("inactive")
        if not site.ship:
            candidate.excluded.append("no-ship")
        if not site.sell_online:
            candidate.excluded.append("not-selling-online")
        if site.ship and capacity_used.get(site.id, 0) >= site.daily_capacity:
            candidate.excluded.append("capacity-full")
        if not any(candidate.sellable.values()):
            candidate.excluded.append("no-stock")
        candidates.append(candidate)
    # Nearest first; without a destination, the location holding the most of the order first.
    candidates.sort(key=lambda c: (c.distance_m if c.distance_m is not None else 0,
                                   -sum(min(c.sellable[l.sku_id], l.qty) for l in lines), c.location_id))
    eligible = [c for c in candidates if not c.excluded]

    # Note what each eligible location lacks: it cannot serve alone, it may still take part in a split.
    for candidate in eligible:
        candidate.excluded.extend(f"partial:{s.split(':', 1)[1]}" for s in _shortages(lines, candidate.sellable))
    for candidate in eligible:
        if not candidate.excluded:
            return Decision("ship", [Allocation(candidate.location_id, tuple(lines))], candidates, "single_location")

    pool = eligible[:SPLIT_SEARCH_WIDTH]
    for size in range(2, max(1, max_splits) + 1):
        best: tuple[int, list[Allocation]] | None = None
        for combo in combinations(pool, size):
            allocations = _fill(lines, combo)
            if allocations is None or len(allocations) < size:
                continue
            total = sum(c.distance_m or 0 for c in combo)
            if best is None or total < best[0]:
                best = (total, allocations)
        if best is not None:
            return Decision("ship", best[1], candidates, "split")
    return Decision("ship", [], candidates, "rejected", reason="sold-out")


def _fill(lines: list[Line], combo: tuple[Candidate, ...]) -> list[Allocation] | None:
    """Take each line from the nearest location of `combo` first; None when the combo cannot cover it."""
    taken: dict[str, list[Line]] = {c.location_id: [] for c in combo}
    for line in lines:
        remaining = line.qty
        for candidate in combo:  # combo keeps the nearest-first order of the pool
            take = min(remaining, candidate.sellable.get(line.sku_id, 0))
            if take > 0:
                taken[candidate.location_id].append(Line(line.sku_id, take))
                remaining -= take
            if remaining == 0:
                break
        if remaining > 0:
            return None
    return [Allocation(loc, tuple(ls)) for loc, ls in taken.items() if ls]


def is_open(opening_hours: str, local_minutes: int) -> bool | None:
    """Whether "HH:MM-HH:MM" opening hours include the local time of day (None when the hours are unknown).
    A range past midnight (e.g. 22:00-02:00) wraps; "00:00-24:00" is always open."""
    try:
        start, end = (int(h) * 60 + int(m) for h, m in (part.strip().split(":") for part in opening_hours.split("-")))
    except (ValueError, AttributeError):
        return None
    if start <= end:
        return start <= local_minutes < end
    return local_minutes >= start or local_minutes < end
