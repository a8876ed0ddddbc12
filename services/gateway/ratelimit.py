"""Token buckets and an in-flight gate, keyed by client IP, principal, or target. Pure (the clock is injected).

Buckets live in this process: with several gateway replicas each one enforces the limits on its own share of
the traffic (a shared store such as Redis would be needed for exact global limits).
"""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketRule:
    name: str  # bounded: it becomes a metric label
    rate_per_s: float
    burst: int


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """`take(rule, key)` returns 0 when the call may proceed, else the seconds until a token is available.

    At most `max_keys` buckets are kept (least recently used evicted), so a flood of new keys cannot
    exhaust memory; an evicted bucket comes back full, which only ever errs on the side of the caller.
    """

    def __init__(self, max_keys: int = 200_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str], _Bucket] = OrderedDict()

    def take(self, rule: BucketRule, key: str, cost: float = 1.0) -> float:
        now = self.clock()
        slot = (rule.name, key)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = _Bucket(float(rule.burst), now)
            self._buckets[slot] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(slot)
            bucket.tokens = min(float(rule.burst), bucket.tokens + (now - bucket.updated) * rule.rate_per_s)
            bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        if rule.rate_per_s <= 0:
            return math.inf
        return (cost - bucket.tokens) / rule.rate_per_s

    def __len__(self) -> int:
        return len(self._buckets)


class InFlightGate:
    """At most `limit` concurrent calls per key (e.g. one order placement per member at a time)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def try_enter(self, key: str) -> bool:
        current = self._counts.get(key, 0)
        if current >= self.limit:
            return False
        self._counts[key] = current + 1
        return True

    def leave(self, key: str) -> None:
        current = self._counts.get(key, 0) - 1
        if current > 0:
            self._counts[key] = current
        else:
            self._counts.pop(key, None)

    def __len__(self) -> int:
        return len(self._counts)


def retry_after_header(seconds: float) -> str:
    """Retry-After is whole seconds (RFC 9110); never 0, so a client that honours it does back off."""
    if math.isinf(seconds):
        return "3600"
    return str(max(1, math.ceil(seconds)))
