"""Points rules: earning, capped redemption, FIFO expiry, claw-back."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from services.membership.domain import points as p
from services.membership.domain.errors import MembershipError

POLICY = p.PointsPolicy()
DAY = p.DAY_MS


def lot(amount, at_day, kind=p.EARN):
    return {"kind": kind, "amount": amount, "at_ms": at_day * DAY, "expires_at_ms": (at_day + 365) * DAY}


def debit(amount, at_day, kind=p.HOLD):
    return {"kind": kind, "amount": -amount, "at_ms": at_day * DAY}


def test_earning_is_whole_yuan_times_rate_times_tier_multiplier():
    assert p.earned_points(12_345, 1.0, POLICY) == 123
    assert p.earned_points(12_345, 1.5, POLICY) == 184
    assert p.earned_points(99, 2.0, POLICY) == 0
    assert p.earned_points(-100, 1.0, POLICY) == 0


def test_redemption_is_capped_at_the_share_of_the_order_and_never_exceeds_the_request():
    assert p.redemption(500, 100_000, POLICY) == (500, 500)          # 100 points = 1 yuan = 100 fen
    assert p.redemption(80_000, 100_000, POLICY) == (50_000, 50_000)  # capped at 50 %
    assert p.redemption(0, 100_000, POLICY) == (0, 0)
    coarse = p.PointsPolicy(redeem_points_per_yuan=150)
    used, discount = p.redemption(100, 100_000, coarse)
    assert used <= 100 and discount == used * 100 // 150
    with pytest.raises(MembershipError):
        p.redemption(-1, 100, POLICY)


@given(requested=st.integers(0, 10**7), payable=st.integers(0, 10**8), rate=st.integers(1, 1000),
       share=st.integers(0, 100))
def test_redemption_never_gives_more_than_it_takes(requested, payable, rate, share):
    policy = p.PointsPolicy(redeem_points_per_yuan=rate, max_redeem_share_pct=share)
    used, discount = p.redemption(requested, payable, policy)
    assert 0 <= used <= requested and 0 <= discount <= payable * share // 100
    assert discount * rate <= used * 100  # the member never gets a fen they did not pay points for


def test_expiry_charges_consumption_to_the_oldest_lots_first():
    entries = [lot(300, 0), lot(200, 100), debit(100, 50)]
    assert p.expiring_now(entries, 364 * DAY) == 0
    assert p.expiring_now(entries, 365 * DAY) == 200       # 300 - 100 already spent from the oldest lot
    assert p.expiring_now(entries, 465 * DAY) == 400       # both lots past validity
    entries.append({"kind": p.EXPIRE, "amount": -200, "at_ms": 365 * DAY})
    assert p.expiring_now(entries, 365 * DAY) == 0          # idempotent: expiry counts as consumption
    assert p.expiring_now(entries, 465 * DAY) == 200


def test_a_release_restores_points_to_the_oldest_lot():
    entries = [lot(300, 0), debit(300, 10), {"kind": p.RELEASE, "amount": 300, "at_ms": 11 * DAY}]
    assert p.expiring_now(entries, 365 * DAY) == 300


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 1000), st.integers(0, 800)), max_size=30),
       st.integers(0, 1500))
def test_expiry_never_exceeds_the_balance(ops, now_day):
    entries, balance = [], 0
    for is_credit, amount, day in ops:
        if is_credit:
            entries.append(lot(amount, day))
            balance += amount
        elif amount <= balance:
            entries.append(debit(amount, day))
            balance -= amount
    due = p.expiring_now(entries, now_day * DAY)
    assert 0 <= due <= balance


def test_clawback_is_proportional_and_never_repeated():
    assert p.clawback(1000, 100_000, 50_000, 0) == 500
    assert p.clawback(1000, 100_000, 100_000, 500) == 500
    assert p.clawback(1000, 100_000, 100_000, 1000) == 0
    assert p.spent_points_to_return(400, 28_000, 28_000, 0) == 400
    assert p.spent_points_to_return(400, 28_000, 14_000, 0) == 200


def test_a_debit_beyond_the_balance_is_refused():
    with pytest.raises(MembershipError) as refused:
        p.ensure_covered(99, 100)
    assert refused.value.code == "insufficient-points"


def test_a_clawback_is_covered_by_the_balance_then_the_holds_and_the_rest_is_a_debt():
    assert p.clawback_sources(300, 500, 200) == p.ClawbackSources(300, 0, 0)
    assert p.clawback_sources(300, 100, 150) == p.ClawbackSources(100, 150, 50)
    assert p.clawback_sources(300, 0, 1000) == p.ClawbackSources(0, 300, 0)
    # already in debt: nothing spendable covers it
    assert p.clawback_sources(300, -40, 0) == p.ClawbackSources(0, 0, 300)
    assert p.clawback_sources(0, 100, 100) == p.ClawbackSources(0, 0, 0)


def test_a_debt_eats_the_next_lot_first_so_nothing_it_paid_for_expires():
    entries = [
        {"kind": p.EARN, "amount": 100, "at_ms": 0, "expires_at_ms": 10 * DAY},
        {"kind": p.HOLD, "amount": -100, "at_ms": 1},
        {"kind": p.CLAWBACK, "amount": -100, "at_ms": 2},          # balance -100: a debt
        {"kind": p.EARN, "amount": 150, "at_ms": 3, "expires_at_ms": 20 * DAY},
    ]
    assert p.expiring_now(entries, 10 * DAY) == 0       # the first lot was spent on the hold
    assert p.expiring_now(entries, 20 * DAY) == 50      # the debt took 100 of the second lot
    assert p.expiring_now(entries[:3], 30 * DAY) == 0   # a negative balance never expires further
