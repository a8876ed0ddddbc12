"""The one interface every channel adapter implements."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class OutboundMessage:
    delivery_id: str
    event_id: str
    event_type: str
    channel: str
    address: str
    subject: str
    body: str
    locale: str
    attempt: int
    payload: bytes = b""  # webhooks: the exact JSON body that is signed and sent
    secret: str | None = None  # webhooks: the subscription's signing secret
    headers: dict[str, str] = field(default_factory=dict)
    # What a record of the message may keep (sandbox outbound log): the text with its one-time code masked, outside
    # dev mode. None: the text itself.
    kept_body: str | None = None


@dataclass(frozen=True)
class SendReport:
    ok: bool
    permanent: bool = False  # retrying cannot help (bad address, 4xx, subscription gone)
    error: str | None = None
    status_code: int | None = None  # HTTP status or SMTP reply code when there was one
    provider_id: str | None = None

    @classmethod
    def sent(cls, provider_id: str | None = None, status_code: int | None = None) -> SendReport:
        return cls(True, provider_id=provider_id, status_code=status_code)

    @classmethod
    def transient(cls, error: str, status_code: int | None = None) -> SendReport:
        return cls(False, False, error[:500], status_code)

    @classmethod
    def permanent_failure(cls, error: str, status_code: int | None = None) -> SendReport:
        return cls(False, True, error[:500], status_code)


class Channel(Protocol):
    name: str

    async def send(self, message: OutboundMessage) -> SendReport:
        """Try once. Never raises for a delivery problem: the report says whether to retry."""
        ...
