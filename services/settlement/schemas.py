"""The shapes of settlement's HTTP API (also its OpenAPI schemas): what it accepts and what it answers.

Money in integer fen; times UTC RFC 3339. Stored documents are passed through the answer models, so what is
documented is what is sent.
"""
from __future__ import annotations

from datetime import date as CalendarDate
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, create_model

from libs.clock import rfc3339
from libs.models import CURSOR, Strict

Granularity = Literal["day", "week", "month"]


class Out(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def page_model(item: type[Out], name: str) -> type[Out]:
    """The list answer of `item`: {"items": [...], "next_cursor": "…" | null}."""
    return create_model(name, __base__=Out, items=(list[item], ...), next_cursor=(str | None, None))


def shaped(model: type[BaseModel], doc: Any) -> dict:
    """A stored document (or domain dict) as the documented answer: RFC 3339 times, `id` for `_id`."""
    return model.model_validate(doc).model_dump(mode="json")


def shaped_page(model: type[BaseModel], page: dict) -> dict:
    return {"items": [shaped(model, doc) for doc in page["items"]], "next_cursor": page.get("next_cursor")}


def closed_summary(doc: dict) -> dict:
    """A frozen statement's stored header in the same shape as a computed statement's summary."""
    return {**doc, "id": doc["_id"], "party": {"kind": doc["party_kind"], "id": doc["party_id"]}}


def free_form(value: Any) -> Any:
    """Postings (free-form documents): datetimes as UTC RFC 3339, `id` for `_id`."""
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, dict):
        return {("id" if key == "_id" else key): free_form(item) for key, item in value.items() if key != "booked_ms"}
    if isinstance(value, list | tuple):
        return [free_form(item) for item in value]
    return value


# -- requests -------------------------------------------------------------------------------------
class FeeIn(Strict):
    kind: Literal["percent", "fixed"]
    bps: int = Field(0, ge=0, le=10_000)
    amount: int = Field(0, ge=0, le=10_000_000)


class NewSplitRule(Strict):
    """A new version; fields left out keep the values of the latest version."""
    effective_from: AwareDatetime
    ship_from_store_fee: FeeIn | None = None
    pickup_handling_fee: FeeIn | None = None
    in_store_fee: FeeIn | None = None
    staff_commission_bps: int | None = Field(None, ge=0, le=10_000)
    franchise_wholesale_markup_bps: int | None = Field(None, ge=0, le=100_000)
    channel_fee_bps: dict[str, int] | None = None
    payment_fee_bps: dict[str, int] | None = None
    note: str = Field("", max_length=500)


BUSINESS_DAY = ("a local calendar day (YYYY-MM-DD) in the business time zone (SETTLEMENT_BUSINESS_TIME_ZONE, "
                "Asia/Shanghai by default), not a UTC date: 16:30 UTC on 1 May is 2 May in Shanghai")


class StatementQuery(Strict):
    account: str | None = Field(None, max_length=200)
    granularity: Granularity | None = None
    date: CalendarDate | Literal["today"] | None = Field(None, description=(
        f"the period containing this day: {BUSINESS_DAY}; `today` is the current business day"))
    cursor: str | None = CURSOR
    limit: int = Field(50, ge=1, le=200)


class PageQuery(BaseModel):
    """The query of a list that only pages (other parameters are ignored, as they always were)."""
    cursor: str | None = CURSOR


class ClosePeriod(Strict):
    granularity: Granularity
    date: CalendarDate = Field(description=f"the period containing this day: {BUSINESS_DAY}")
    account: str | None = Field(None, max_length=200)


class NewPayoutBatch(Strict):
    granularity: Granularity
    date: CalendarDate = Field(description=f"the period containing this day: {BUSINESS_DAY}")


class ReconciliationWindow(Strict):
    captured_from: AwareDatetime
    captured_to: AwareDatetime
    provider: str | None = Field(None, max_length=50)


# -- answers --------------------------------------------------------------------------------------


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
    staff_commission_bps: int = Field(description="the credited shop assistant's share of the net, in bps")
    franchise_wholesale_markup_bps: int = Field(description="franchisees buy at cost marked up by this, in bps")
    channel_fee_bps: dict[str, int] = Field(description="per sales channel, in bps")
    payment_fee_bps: dict[str, int] = Field(description="per payment provider, in bps (when the event has no fee)")
    note: str = ""
    created_at: datetime | None = None
    created_by: str | None = None


SplitRulePage = page_model(SplitRuleOut, "SplitRulePage")


class Party(Out):
    kind: str
    id: str | None


class StatementSummary(Out):
    id: str
    account: str
    party: Party
    granularity: Granularity
    period_start: datetime = Field(description="the period's first instant (UTC)")
    period_end: datetime = Field(description="the instant the period ends (UTC, exclusive)")
    time_zone: str = Field("Asia/Shanghai", description="the time zone whose calendar the period follows")
    local_date: CalendarDate | None = Field(None, description="the period's first local day in that zone")
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


StatementPage = page_model(StatementSummary, "StatementPage")


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


AccountPage = page_model(AccountOut, "AccountPage")


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


PayoutPage = page_model(PayoutBatchOut, "PayoutPage")


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


ReconciliationPage = page_model(ReconciliationOut, "ReconciliationPage")
