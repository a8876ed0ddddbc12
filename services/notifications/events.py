"""Integration events notifications publishes (past tense; never renamed)."""
from __future__ import annotations

from datetime import datetime

from libs.bus import IntegrationEvent


class DeliveryFailed(IntegrationEvent):
    """A message could not be delivered for good (permanent error or retries exhausted)."""
    event_type = "notifications.delivery.failed"
    delivery_id: str
    event_id: str
    notified_event_type: str
    recipient_id: str
    member_id: str | None = None
    channel: str
    category: str
    attempts: int
    error: str
    failed_at: datetime
