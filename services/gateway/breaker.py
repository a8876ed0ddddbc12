"""A circuit breaker per upstream. Pure (the clock is injected), so every transition is unit-tested.

closed --N consecutive failures--> open --open_s elapsed--> half_open --trial succeeds--> closed
                                     ^--------------------------------- trial fails ----'
While open, calls are refused at once (503 + Retry-After) instead of piling up on a sick service.
In half-open exactly one trial call is let through; the others are refused until it has answered.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class BreakerState(Enum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(self, name: str, failure_threshold: int = 5, open_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, BreakerState], None] | None = None) -> None:
        self.name = name
        self.failure_threshold = max(1, failure_threshold)
        self.open_s = open_s
        self.clock = clock
        self.on_change = on_change
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.opened_at = 0.0
        self._trial_in_flight = False

    def _move(self, state: BreakerState) -> None:
        if state is not self.state:
            self.state = state
            if self.on_change is not None:
                self.on_change(self.name, state)

    def before_call(self) -> float | None:
        """None when the call may go ahead; else the seconds the caller should wait before retrying."""
        if self.state is BreakerState.OPEN:
            remaining = self.opened_at + self.open_s - self.clock()
            if remaining > 0:
                return remaining
            self._move(BreakerState.HALF_OPEN)
        if self.state is BreakerState.HALF_OPEN:
            if self._trial_in_flight:
                return 1.0
            self._trial_in_flight = True
        return None

    def record_success(self) -> None:
        self._trial_in_flight = False
        self.consecutive_failures = 0
        self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._trial_in_flight = False
        self.consecutive_failures += 1
        if self.state is BreakerState.HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
            self.opened_at = self.clock()
            self._move(BreakerState.OPEN)

    def record_abandoned(self) -> None:
        """The call ended without telling anything about the upstream (e.g. the client went away)."""
        self._trial_in_flight = False
