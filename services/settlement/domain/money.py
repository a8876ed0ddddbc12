"""Integer-fen arithmetic and the rounding rule of settlement.

Rounding rule (stated once, applied everywhere): shares are first computed exactly as fractions of a fen;
each is rounded down, and the fen left over (always fewer than the number of shares) go one each to the
shares with the largest fractional remainders, ties going to the earlier share in the stated order
(largest remainder, Hamilton's method). The rounded shares therefore always add up to the exact total.
A single fee computed from a rate (e.g. a payment fee) is rounded half up.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

BPS = 10_000  # basis points in a whole


def round_to_total(exact: Sequence[Fraction], total: int) -> list[int]:
    """Round exact shares to integers that add up to `total` (largest remainder)."""
    floors = [math.floor(share) for share in exact]
    leftover = total - sum(floors)
    if not 0 <= leftover <= len(exact):
        raise ValueError(f"exact shares {sum(exact)} cannot be rounded to the total {total}")
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
    for index in by_remainder[:leftover]:
        floors[index] += 1
    return floors


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split `total` fen in proportion to non-negative `weights`; equal parts when all weights are zero."""
    if not weights:
        if total:
            raise ValueError("cannot allocate a non-zero amount over nothing")
        return []
    if any(weight < 0 for weight in weights):
        raise ValueError("allocation weights must not be negative")
    weight_sum = sum(weights)
    if weight_sum == 0:
        weights, weight_sum = [1] * len(weights), len(weights)
    return round_to_total([Fraction(total * weight, weight_sum) for weight in weights], total)


def rate_of(amount: int, bps: int) -> Fraction:
    """`bps` basis points of `amount`, exactly."""
    return Fraction(amount * bps, BPS)


def round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))
