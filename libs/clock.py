"""Time as the suite keeps it: UTC instants, integer epoch milliseconds in storage, RFC 3339 on the wire."""
from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    return int(time.time() * 1000)


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def rfc3339(value: int | float | datetime | None) -> str | None:
    """An instant as RFC 3339 UTC with a `Z` (epoch milliseconds or a datetime; naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        moment = from_ms(value)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
