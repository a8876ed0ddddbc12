"""The shapes settlement's HTTP API answers with (also its OpenAPI schemas). Money in integer fen; times UTC
RFC 3339. Stored documents are passed through these models, so what is documented is what is sent."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

Granularity = Literal["day", "week", "month"]


class Out(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class FeeOut(Out):
    kind: Literal["percent", "fixed"]
    bps: int
    amount: int


class SplitRuleOut(Out):
    version: int
    effective_from: datetime
    ship_from_store_fee: FeeOut
    pickup_handling_fee: FeeOut
    in_store_fee: FeeOut
    staff_commission_bps: int
    franchise_wholesale_markup_bps: int
    channel_fee_bps: dict[str, int]
    payment_fee_bps: dict[str, int]
    note: str = ""
    created_at: datetime | None = None
    created_by: str | None = None


class SplitRulePage(Out):
    items: list[SplitRuleOut]
    next_cursor: str | None = None


class Party(Out):
    kind: str
    id: str | None


class StatementSummary(Out):
    id: str
    account: str
    party: Party
    granularity: Granularity
    period_start: datetime
    period_end: datetime
    status: Literal["open", "closed"]
    opening: int = Field(description="fen owed to the party at the start of the period")
    total_credits: int
    total_debits: int
    closing: int = Field(description="fen owed to the party at the end of the period")
    entry_count: int
    closed_at: datetime | None = None


class StatementEntry(Out):
    entry_id: str
    booked_at: datetime
    posting_id: str
    kind: Literal["capture", "sale", "refund", "payout"]
    order_id: str | None
    debit: int
    credit: int
    balance: int = Field(description="running balance after this entry")
    memo: str = ""


class StatementOut(StatementSummary):
    entries: list[StatementEntry]


class StatementPage(Out):
    items: list[StatementSummary]
    next_cursor: str | None = None


class CloseResult(Out):
    granularity: Granularity
    period_start: datetime
    period_end: datetime
    closed: list[StatementSummary] = Field(description="statements frozen by this request")
    already_closed: list[StatementSummary]


class AccountOut(Out):
    id: str = Field(alias="_id")
    kind: str
    party_id: str | None = None
    franchisee_id: str | None = None
    balance: int = Field(description="credits minus debits: what O2O owes the party")
    committed_payouts: int = 0


class AccountPage(Out):
    items: list[AccountOut]
    next_cursor: str | None = None


class PayoutItem(Out):
    account: str
    party_kind: str
    party_id: str | None
    franchisee_id: str | None = None
    amount: int
    statement_id: str


class PayoutBatchOut(Out):
    id: str = Field(alias="_id")
    granularity: Granularity
    period_start: datetime
    period_end: datetime
    status: Literal["pending", "paid", "cancelled"]
    items: list[PayoutItem]
    total: int
    created_at: datetime
    created_by: str | None = None
    paid_at: datetime | None = None
    cancelled_at: datetime | None = None


class PayoutPage(Out):
    items: list[PayoutBatchOut]
    next_cursor: str | None = None


class ReconciliationOut(Out):
    id: str = Field(alias="_id")
    status: Literal["clean", "discrepancies"]
    captured_from: AwareDatetime
    captured_to: AwareDatetime
    provider: str | None = None
    rows: int
    expected: int = Field(description="payments captured in the window")
    matched: int
    missing: list[dict] = Field(default_factory=list, description="captured, absent from the file")
    extra: list[dict] = Field(default_factory=list, description="in the file, never captured")
    mismatched: list[dict] = Field(default_factory=list, description="amount (or fee) differs")
    created_at: datetime
    created_by: str | None = None


class ReconciliationPage(Out):
    items: list[ReconciliationOut]
    next_cursor: str | None = None
