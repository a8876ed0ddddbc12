"""Password-login throttling: a progressive delay per failure count, never a hard lock. Pure; the caller
supplies the time and stores the records.

Failures are counted twice: per username and requester (one device's guesses; a small free allowance, then a
delay that doubles with every failure, up to a long cap) and per username from anywhere (a large allowance and a
short cap, so guesses from rotating addresses are slowed to one a minute, but a stranger can never keep the owner
out for longer than that cap). An attempt is counted before the password is judged, so concurrent guesses cannot
slip past the count.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoginThrottle:
    free_failures: int      # failures before the first delay
    first_delay_s: float    # the delay after the first failure beyond the allowance; doubled for each further one
    max_delay_s: float
    forget_after_s: float   # failures older than this (counted from the last one) are forgotten


def delay_ms(failures: int, throttle: LoginThrottle) -> int:
    """How long after the last failure the next attempt may come, once `failures` have been counted."""
    if failures < throttle.free_failures:
        return 0
    doublings = min(failures - throttle.free_failures, 40)
    return int(min(throttle.max_delay_s, throttle.first_delay_s * 2 ** doublings) * 1000)


def standing(record: dict | None, now_ms: int, throttle: LoginThrottle) -> tuple[int, int]:
    """(failures that still count, milliseconds to wait before the next attempt) for a stored record
    `{"failures", "last_failure_ms"}` (None: no failures)."""
    if not record:
        return 0, 0
    last = int(record.get("last_failure_ms", 0))
    if now_ms - last >= throttle.forget_after_s * 1000:
        return 0, 0
    failures = int(record.get("failures", 0))
    return failures, max(0, last + delay_ms(failures, throttle) - now_ms)
