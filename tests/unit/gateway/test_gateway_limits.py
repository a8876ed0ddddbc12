"""Token buckets, the in-flight gate and the circuit breaker, on an injected clock."""
from __future__ import annotations

import math

from services.gateway.breaker import BreakerState, CircuitBreaker
from services.gateway.ratelimit import BucketRule, InFlightGate, RateLimiter, retry_after_header


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_refuses_with_the_wait_until_next_token():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    rule = BucketRule("t", rate_per_s=0.5, burst=3)
    assert [limiter.take(rule, "a") for _ in range(3)] == [0, 0, 0]
    assert limiter.take(rule, "a") == 2.0  # one token every 2 s
    assert limiter.take(rule, "b") == 0  # keys are independent
    clock.now += 2.0
    assert limiter.take(rule, "a") == 0
    assert limiter.take(rule, "a") > 0


def test_bucket_refill_is_capped_at_burst():
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    rule = BucketRule("t", rate_per_s=10, burst=2)
    limiter.take(rule, "a")
    clock.now += 3600
    assert [limiter.take(rule, "a") for _ in range(3)][:2] == [0, 0]
    assert limiter.take(rule, "a") > 0


def test_rules_with_the_same_key_are_separate_buckets():
    limiter = RateLimiter(clock=Clock())
    strict, loose = BucketRule("strict", 0.001, 1), BucketRule("loose", 0.001, 5)
    assert limiter.take(strict, "k") == 0 and limiter.take(strict, "k") > 0
    assert limiter.take(loose, "k") == 0


def test_bucket_count_is_bounded():
    limiter = RateLimiter(max_keys=100, clock=Clock())
    rule = BucketRule("t", 1, 1)
    for n in range(1000):
        limiter.take(rule, f"ip-{n}")
    assert len(limiter) == 100


def test_zero_rate_never_refills():
    limiter = RateLimiter(clock=Clock())
    rule = BucketRule("t", 0, 1)
    limiter.take(rule, "a")
    assert math.isinf(limiter.take(rule, "a"))
    assert retry_after_header(math.inf) == "3600"


def test_retry_after_is_whole_seconds_at_least_one():
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(1.2) == "2"
    assert retry_after_header(30) == "30"


def test_in_flight_gate():
    gate = InFlightGate(limit=1)
    assert gate.try_enter("mbr_a")
    assert not gate.try_enter("mbr_a")
    assert gate.try_enter("mbr_b")
    gate.leave("mbr_a")
    assert gate.try_enter("mbr_a")
    gate.leave("mbr_a")
    gate.leave("mbr_b")
    assert len(gate) == 0  # no leak of finished keys


def test_breaker_opens_after_consecutive_failures_only():
    clock, changes = Clock(), []
    breaker = CircuitBreaker("stock", failure_threshold=3, open_s=10, clock=clock,
                             on_change=lambda name, state: changes.append((name, state)))
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # a success resets the count
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.before_call() is None
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.before_call() == 10
    clock.now += 4
    assert breaker.before_call() == 6
    assert changes == [("stock", BreakerState.OPEN)]


def test_breaker_half_open_lets_one_trial_through():
    clock = Clock()
    breaker = CircuitBreaker("stock", failure_threshold=1, open_s=5, clock=clock)
    breaker.record_failure()
    clock.now += 5
    assert breaker.before_call() is None  # the trial
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.before_call() == 1.0  # others wait for the trial's outcome
    breaker.record_failure()  # the trial failed: open again, for a full period
    assert breaker.state is BreakerState.OPEN and breaker.before_call() == 5
    clock.now += 5
    assert breaker.before_call() is None
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.before_call() is None


def test_abandoned_trial_frees_the_slot():
    clock = Clock()
    breaker = CircuitBreaker("stock", failure_threshold=1, open_s=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    assert breaker.before_call() is None
    breaker.record_abandoned()
    assert breaker.before_call() is None  # a new trial may go
