"""Integration events settlement publishes (past tense; never renamed)."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from libs.bus import IntegrationEvent


class PostedEntry(BaseModel):
    account: str = Field(description="hq | payment_clearing | deferred_revenue | bank | <kind>:<party id>")
    debit: int = Field(ge=0, description="fen")
    credit: int = Field(ge=0, description="fen")


class EntriesPosted(IntegrationEvent):
    """A balanced posting was written to the journal (one per order and event type; payouts per batch)."""
    event_type = "settlement.entries.posted"
    posting_id: str
    key: str = Field(description="what makes the posting unique: order id | source event type [| refund id]")
    kind: Literal["capture", "sale", "refund", "payout"]
    order_id: str | None
    source_event_type: str
    rule_version: int | None = Field(description="split rule version the shares were computed with")
    booked_at: datetime
    entries: list[PostedEntry]


class StatementClosed(IntegrationEvent):
    """A party's statement for a period was frozen; notifications tells the franchisee."""
    event_type = "settlement.statement.closed"
    statement_id: str
    account: str
    party_kind: Literal["hq", "payment_clearing", "deferred_revenue", "bank", "store", "franchisee", "staff",
                        "channel", "provider"]
    party_id: str | None
    franchisee_id: str | None = Field(description="set for a franchisee's account and its stores' accounts")
    store_id: str | None
    granularity: Literal["day", "week", "month"]
    period_start: datetime
    period_end: datetime
    opening: int = Field(description="fen owed to the party at the start of the period")
    total_credits: int
    total_debits: int
    closing: int = Field(description="fen owed to the party at the end of the period")
    net_amount: int = Field(description="amount due to the party: the closing balance, in fen")
    entry_count: int
    currency: Literal["CNY"] = "CNY"
