"""Reconciliation (对账): the payment provider's settlement file against the payments captured from orders."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from libs.refusal import INVALID, Refusal

REQUIRED_COLUMNS = ("payment_id", "amount", "settled_at")
MAX_ROWS = 100_000


class ReconciliationFileError(Refusal):
    """The provider's file cannot be read; `line` says where (1 is the header)."""

    default_kind = INVALID

    def __init__(self, detail: str, line: int | None = None) -> None:
        super().__init__("invalid-settlement-file", detail, line=line)
        self.line = line


@dataclass(frozen=True)
class ProviderRow:
    line: int
    payment_id: str
    amount: int
    fee: int | None
    settled_at: datetime


@dataclass(frozen=True)
class CapturedPayment:
    payment_id: str
    order_id: str
    provider: str
    amount: int
    fee: int | None
    captured_at: datetime


def _fen(text: str, column: str, line: int) -> int:
    text = text.strip()
    if not text.lstrip("-").isdigit():
        raise ReconciliationFileError(f"{column} must be an integer number of fen, got {text!r}", line)
    return int(text)


def parse_provider_csv(text: str) -> list[ProviderRow]:
    """Rows of a provider file with the header payment_id,amount,fee,settled_at (fee may be empty)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise ReconciliationFileError(f"the header lacks the column(s) {', '.join(missing)}", 1)
    reader.fieldnames = header
    rows, seen = [], set()
    for number, raw in enumerate(reader, start=2):
        if len(rows) >= MAX_ROWS:
            raise ReconciliationFileError(f"more than {MAX_ROWS} rows", number)
        if not any((value or "").strip() for value in raw.values() if isinstance(value, str)):
            continue  # blank line
        payment_id = (raw.get("payment_id") or "").strip()
        if not payment_id:
            raise ReconciliationFileError("payment_id is empty", number)
        if payment_id in seen:
            raise ReconciliationFileError(f"payment {payment_id} appears twice", number)
        seen.add(payment_id)
        amount = _fen(raw.get("amount") or "", "amount", number)
        fee_text = (raw.get("fee") or "").strip()
        fee = _fen(fee_text, "fee", number) if fee_text else None
        try:
            settled_at = datetime.fromisoformat((raw.get("settled_at") or "").strip().replace("Z", "+00:00"))
        except ValueError:
            raise ReconciliationFileError("settled_at must be an RFC 3339 time", number) from None
        if settled_at.tzinfo is None:
            raise ReconciliationFileError("settled_at must carry a time zone", number)
        rows.append(ProviderRow(number, payment_id, amount, fee, settled_at))
    return rows


@dataclass(frozen=True)
class ReconciliationResult:
    matched: tuple[str, ...]
    missing: tuple[dict, ...]  # captured by us, absent from the provider's file
    extra: tuple[dict, ...]  # in the provider's file, never captured by us
    mismatched: tuple[dict, ...]  # in both, with a different amount (or fee, when we know the fee)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.mismatched)


def reconcile(rows: Iterable[ProviderRow], known: Mapping[str, CapturedPayment],
              expected_ids: Iterable[str]) -> ReconciliationResult:
    """`known`: captured payments by id (any capture time); `expected_ids`: those captured in the window
    the file covers, each of which the file must contain."""
    matched, extra, mismatched, in_file = [], [], [], set()
    for row in rows:
        in_file.add(row.payment_id)
        captured = known.get(row.payment_id)
        if captured is None:
            extra.append({"payment_id": row.payment_id, "settled_amount": row.amount, "settled_fee": row.fee,
                          "settled_at": row.settled_at, "line": row.line})
            continue
        differences = []
        if captured.amount != row.amount:
            differences.append("amount")
        if captured.fee is not None and row.fee is not None and captured.fee != row.fee:
            differences.append("fee")
        if differences:
            mismatched.append({"payment_id": row.payment_id, "order_id": captured.order_id,
                               "differences": differences, "captured_amount": captured.amount,
                               "settled_amount": row.amount, "amount_difference": row.amount - captured.amount,
                               "captured_fee": captured.fee, "settled_fee": row.fee, "line": row.line})
        else:
            matched.append(row.payment_id)
    missing = [{"payment_id": payment_id, "order_id": known[payment_id].order_id,
                "captured_amount": known[payment_id].amount, "captured_at": known[payment_id].captured_at}
               for payment_id in sorted(set(expected_ids) - in_file)]
    return ReconciliationResult(tuple(matched), tuple(missing), tuple(extra), tuple(mismatched))
