"""Integration events settlement publishes (past tense; never renamed)."""
from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from libs.bus import IntegrationEvent


class PostedEntry(BaseModel):
    account: str
    debit: int
    credit: int


class EntriesPosted(IntegrationEvent):
    """A balanced posting was written to the journal (one per order and event type)."""
    event_type = "settlement.entries.posted"
    posting_id: str
    key: str
    kind: str  # capture | sale | refund | payout
    order_id: str | None
    source_event_type: str
    rule_version: int | None
    booked_at: datetime
    entries: list[PostedEntry]


class StatementClosed(IntegrationEvent):
    """A party's statement for a period was frozen; notifications tells the party (franchisee, store)."""
    event_type = "settlement.statement.closed"
    statement_id: str
    account: str
    party_kind: str
    party_id: str | None
    franchisee_id: str | None
    store_id: str | None
    granularity: str
    period_start: datetime
    period_end: datetime
    opening: int
    total_credits: int
    total_debits: int
    closing: int
    entry_count: int
    currency: str = "CNY"
