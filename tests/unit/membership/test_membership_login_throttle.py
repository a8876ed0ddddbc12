"""Staff login throttling: a delay that grows with failures, never a hard lock, forgotten after a quiet while."""
from services.membership.domain.logins import LoginThrottle, delay_ms, standing

THROTTLE = LoginThrottle(free_failures=5, first_delay_s=1.0, max_delay_s=60.0, forget_after_s=3600.0)


def test_free_failures_then_a_doubling_delay_up_to_the_cap():
    assert [delay_ms(n, THROTTLE) for n in range(5)] == [0] * 5
    assert [delay_ms(n, THROTTLE) for n in range(5, 12)] == [1000, 2000, 4000, 8000, 16000, 32000, 60000]
    assert delay_ms(10_000, THROTTLE) == 60000


def test_standing_counts_from_the_last_failure_and_forgets_old_ones():
    assert standing(None, 5_000, THROTTLE) == (0, 0)
    record = {"failures": 6, "last_failure_ms": 10_000}
    assert standing(record, 10_500, THROTTLE) == (6, 1_500)   # 2 s after the last failure
    assert standing(record, 12_000, THROTTLE) == (6, 0)
    assert standing(record, 10_000 + 3_600_000, THROTTLE) == (0, 0)
