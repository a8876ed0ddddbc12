"""Payout batches: for a closed period, pay every store, franchisee and shop assistant what it is owed."""
from __future__ import annotations

from libs.refusal import CONFLICT, Refusal
from services.settlement.domain import accounts

PENDING, PAID, CANCELLED = "pending", "paid", "cancelled"
TRANSITIONS = {PENDING: {PAID, CANCELLED}, PAID: set(), CANCELLED: set()}


class PayoutError(Refusal):
    """A payout batch cannot do what was asked in its present state."""

    default_kind = CONFLICT


def is_payable_account(account: str) -> bool:
    return accounts.party_of(account)[0] in accounts.PAYABLE_KINDS


def payable_amount(earned_through_period_end: int, already_committed: int) -> int:
    """Earned up to the period's end minus everything already put in a (not cancelled) batch.

    Balances are cumulative, so batches of consecutive periods never pay the same fen twice, and a
    batch created late for an earlier period finds nothing left to pay."""
    return max(0, earned_through_period_end - already_committed)


def check_transition(current: str, target: str) -> None:
    if target not in TRANSITIONS.get(current, set()):
        raise PayoutError("illegal-transition", f"a {current} payout batch cannot become {target}")
