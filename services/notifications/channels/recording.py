"""Sandbox adapters (sms, wechat, push) and the local sink: they keep what they would send in Mongo.

A real SMS or WeChat gateway would replace the sandbox adapter behind the same interface. Records are keyed
by delivery id (like a provider's idempotency key), so a retry after a crash does not record twice.
"""
from __future__ import annotations

from datetime import UTC, datetime

from libs.mongo import Mongo
from services.notifications.channels.base import OutboundMessage, SendReport

OUTBOUND = "outbound_messages"


class RecordingChannel:
    def __init__(self, name: str, mongo: Mongo, *, sandbox: bool = True,
                 reject_addresses: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.mongo = mongo
        self.sandbox = sandbox
        self.reject_addresses = reject_addresses

    async def send(self, message: OutboundMessage) -> SendReport:
        if message.address in self.reject_addresses:
            return SendReport.permanent_failure(f"{self.name} provider rejected address {message.address}")
        record_id = f"{message.delivery_id}"
        document = {"_id": record_id, "channel": self.name, "sandbox": self.sandbox, "address": message.address,
                    "subject": message.subject,
                    "body": message.body if message.kept_body is None else message.kept_body, "locale": message.locale,
                    "event_id": message.event_id, "event_type": message.event_type,
                    "delivery_id": message.delivery_id, "recorded_at": datetime.now(UTC),
                    "recorded_ms": int(datetime.now(UTC).timestamp() * 1000)}
        collection = self.mongo.db[OUTBOUND]

        async def record(session):
            if await collection.find_one({"_id": record_id}, {"_id": 1}, session=session) is None:
                await collection.insert_one(document, session=session)

        try:
            await self.mongo.transaction(record)
        except Exception as exc:  # noqa: BLE001 - storage trouble is worth a retry
            return SendReport.transient(f"sandbox store failed: {type(exc).__name__}: {exc}")
        return SendReport.sent(provider_id=f"{self.name}-{message.delivery_id}")
