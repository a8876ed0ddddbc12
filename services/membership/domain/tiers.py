"""Tiers by rolling 12-month paid amount, each with an earn multiplier."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    name: str
    threshold_fen: int
    multiplier: float


def tier_ladder(thresholds: dict[str, int], multipliers: dict[str, float]) -> list[Tier]:
    ladder = sorted((Tier(name, int(t), float(multipliers.get(name, 1.0))) for name, t in thresholds.items()),
                    key=lambda tier: tier.threshold_fen)
    if not ladder or ladder[0].threshold_fen != 0:
        raise ValueError("the lowest tier must start at 0 fen")
    return ladder


def tier_for(rolling_paid_fen: int, ladder: list[Tier]) -> Tier:
    current = ladder[0]
    for tier in ladder:
        if rolling_paid_fen >= tier.threshold_fen:
            current = tier
    return current


def multiplier_of(name: str, ladder: list[Tier]) -> float:
    for tier in ladder:
        if tier.name == name:
            return tier.multiplier
    return 1.0
