"""Double-entry postings. A posting is a set of entries whose debits equal its credits; once written it is
never changed (corrections are new postings). Party accounts are read credit-normal: a credit is money
O2O owes the party, a debit takes it back.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.settlement.domain import accounts
from services.settlement.domain.splits import Reversal, SaleSplit

CAPTURE, SALE, REFUND, PAYOUT = "capture", "sale", "refund", "payout"


class UnbalancedPosting(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    account: str
    debit: int = 0
    credit: int = 0

    def __post_init__(self) -> None:
        if self.debit < 0 or self.credit < 0 or (self.debit and self.credit):
            raise ValueError("an entry is either a positive debit or a positive credit")

    @property
    def balance_effect(self) -> int:
        """Credit minus debit: how the entry moves what O2O owes the account's party."""
        return self.credit - self.debit


def check_balanced(entries: Iterable[Entry]) -> None:
    entries = list(entries)
    debits, credits = sum(e.debit for e in entries), sum(e.credit for e in entries)
    if debits != credits:
        raise UnbalancedPosting(f"debits {debits} != credits {credits}")


def _signed(account: str, amount: int) -> Entry | None:
    """A credit for a positive amount owed to the account, a debit for a negative one, nothing for zero."""
    if amount > 0:
        return Entry(account, credit=amount)
    if amount < 0:
        return Entry(account, debit=-amount)
    return None


def _posting(entries: Iterable[Entry | None]) -> tuple[Entry, ...]:
    result = tuple(entry for entry in entries if entry is not None and (entry.debit or entry.credit))
    check_balanced(result)
    return result


def capture_entries(amount: int) -> tuple[Entry, ...]:
    """Payment captured: the provider owes HQ the money; until completion it is nobody's revenue yet."""
    return _posting([Entry(accounts.PAYMENT_CLEARING, debit=amount), Entry(accounts.DEFERRED_REVENUE, credit=amount)])


def sale_entries(split: SaleSplit) -> tuple[Entry, ...]:
    """Sale completed: the deferred net amount is recognised and credited to the parties by their shares."""
    shares = split.by_account()
    return _posting([Entry(accounts.DEFERRED_REVENUE, debit=split.net_total),
                     *(_signed(account, amount) for account, amount in sorted(shares.items()))])


def refund_entries(reversal: Reversal, refund_amount: int) -> tuple[Entry, ...]:
    """Refund after completion: each party gives back its share of the returned units; the money leaves
    payment clearing; HQ absorbs any difference between the refunded amount and the reversed shares."""
    reversed_total = sum(reversal.by_account.values())
    by_account = {account: -amount for account, amount in reversal.by_account.items()}
    by_account[accounts.HQ] = by_account.get(accounts.HQ, 0) - (refund_amount - reversed_total)
    return _posting([*(_signed(account, amount) for account, amount in sorted(by_account.items())),
                     Entry(accounts.PAYMENT_CLEARING, credit=refund_amount)])


def unearned_refund_entries(refund_amount: int) -> tuple[Entry, ...]:
    """Refund before completion: nothing was shared yet; the deferred money goes back."""
    return _posting([Entry(accounts.DEFERRED_REVENUE, debit=refund_amount),
                     Entry(accounts.PAYMENT_CLEARING, credit=refund_amount)])


def payout_entries(amounts: Mapping[str, int]) -> tuple[Entry, ...]:
    """A paid payout settles what was owed to each party."""
    return _posting([*(Entry(account, debit=amount) for account, amount in sorted(amounts.items()) if amount > 0),
                     Entry(accounts.BANK, credit=sum(amount for amount in amounts.values() if amount > 0))])


def posting_key(order_or_batch_id: str, event_type: str, reference: str | None = None) -> str:
    """The identity that makes a posting happen once: (order id, event type[, refund reference])."""
    return "|".join(part for part in (order_or_batch_id, event_type, reference) if part)
