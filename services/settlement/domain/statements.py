"""Statements (opening, entries, closing per party per period), who may read them, and their CSV form."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass

from services.settlement.domain import accounts
from libs.clock import from_ms
from services.settlement.domain.periods import Period, statement_id


@dataclass(frozen=True)
class StatementLine:
    entry_id: str
    booked_ms: int
    posting_id: str
    kind: str
    order_id: str | None
    debit: int
    credit: int
    memo: str = ""


@dataclass(frozen=True)
class Statement:
    account: str
    period: Period
    opening: int
    lines: tuple[StatementLine, ...] = ()  # in booking order
    status: str = "open"  # open | closed

    @property
    def id(self) -> str:
        return statement_id(self.account, self.period)

    @property
    def total_debits(self) -> int:
        return sum(line.debit for line in self.lines)

    @property
    def total_credits(self) -> int:
        return sum(line.credit for line in self.lines)

    @property
    def closing(self) -> int:
        """Opening plus credits minus debits: what O2O owes the party at the end of the period."""
        return self.opening + self.total_credits - self.total_debits

    def summary(self) -> dict:
        kind, party_id = accounts.party_of(self.account)
        return {"id": self.id, "account": self.account, "party": {"kind": kind, "id": party_id},
                "granularity": self.period.granularity, "period_start": self.period.start,
                "period_end": self.period.end, "time_zone": self.period.time_zone,
                "local_date": self.period.label.isoformat(), "status": self.status, "opening": self.opening,
                "total_credits": self.total_credits, "total_debits": self.total_debits, "closing": self.closing,
                "entry_count": len(self.lines)}

    def to_dict(self) -> dict:
        balance, rows = self.opening, []
        for line in self.lines:
            balance += line.credit - line.debit
            rows.append({"entry_id": line.entry_id, "booked_at": from_ms(line.booked_ms), "posting_id": line.posting_id,
                         "kind": line.kind, "order_id": line.order_id, "debit": line.debit, "credit": line.credit,
                         "balance": balance, "memo": line.memo})
        return {**self.summary(), "entries": rows}


def build_statement(account: str, period: Period, opening: int, lines: Iterable[StatementLine],
                    status: str = "open") -> Statement:
    ordered = tuple(sorted(lines, key=lambda line: (line.booked_ms, line.entry_id)))
    if any(not period.start_ms <= line.booked_ms < period.end_ms for line in ordered):
        raise ValueError("an entry outside the statement's period")
    return Statement(account, period, opening, ordered, status)


CSV_COLUMNS = ("booked_at", "entry_id", "posting_id", "kind", "order_id", "debit", "credit", "balance", "memo")


def to_csv(statement: Statement) -> str:
    """One row per entry between an opening and a closing row; money in integer fen."""
    document = statement.to_dict()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("statement_id", "account", "granularity", "period_start", "period_end", "status"))
    writer.writerow((statement.id, statement.account, statement.period.granularity,
                     _iso(statement.period.start), _iso(statement.period.end), statement.status))
    writer.writerow(())
    writer.writerow(CSV_COLUMNS)
    writer.writerow((_iso(statement.period.start), "", "", "opening", "", "", "", statement.opening, ""))
    for row in document["entries"]:
        writer.writerow((_iso(row["booked_at"]), row["entry_id"], row["posting_id"], row["kind"], row["order_id"] or "",
                         row["debit"], row["credit"], row["balance"], _safe_cell(row["memo"])))
    writer.writerow((_iso(statement.period.end), "", "", "closing", "", statement.total_debits,
                     statement.total_credits, statement.closing, ""))
    return out.getvalue()


def _iso(moment) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _safe_cell(text: str) -> str:
    """Spreadsheets run cells that start with = + - @ as formulas; a leading quote keeps them text."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text


def can_read(account: str, *, roles: Iterable[str], franchisee_id: str | None, store_ids: Iterable[str]) -> bool:
    """HQ sees every account; a franchisee only its own; a store manager only its own stores'."""
    roles = set(roles)
    if roles & {"hq_admin", "service"}:
        return True
    kind, party_id = accounts.party_of(account)
    if "franchisee" in roles and franchisee_id and kind == "franchisee" and party_id == franchisee_id:
        return True
    return "store_manager" in roles and kind == "store" and party_id in set(store_ids)


def readable_accounts(roles: Iterable[str], franchisee_id: str | None, store_ids: Iterable[str]) -> list[str] | None:
    """The accounts a caller may list (None: all of them)."""
    roles = set(roles)
    if roles & {"hq_admin", "service"}:
        return None
    visible = []
    if "franchisee" in roles and franchisee_id:
        visible.append(accounts.franchisee(franchisee_id))
    if "store_manager" in roles:
        visible.extend(accounts.store(store_id) for store_id in sorted(store_ids))
    return visible
