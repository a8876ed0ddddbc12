"""Contract helpers for tests that see real bus traffic (the end-to-end tests, integration tests).

    async with EventCapture(namespace) as capture:      # binds a private queue to every routing key
        ... drive the suite ...
    capture.assert_valid()                               # every captured event against the AsyncAPI document

`validate_event(envelope)` (re-exported from scripts/asyncapi.py) checks one envelope and its data.
"""
from __future__ import annotations

import json
from collections import Counter

import aio_pika

from libs.bus import Names
from tests.support import AMQP_URL
from scripts.asyncapi import ContractViolation, validate_event

__all__ = ["ContractViolation", "EventCapture", "validate_event"]


class EventCapture:
    """Collects every event published on `<namespace>o2o.events` while the block runs (an exclusive,
    auto-deleted queue bound to `#`, so it takes nothing away from the services' own queues)."""

    def __init__(self, namespace: str, amqp_url: str = AMQP_URL) -> None:
        self.namespace = namespace
        self.amqp_url = amqp_url
        self.events: list[dict] = []
        self.unparsable: list[bytes] = []
        self._connection = None

    async def __aenter__(self) -> EventCapture:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        channel = await self._connection.channel()
        # Declared (not passive): the capture may start before the first service declares the exchange.
        exchange = await channel.declare_exchange(Names(self.namespace).exchange, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="#")
        await queue.consume(self._on_message, no_ack=True)
        return self

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            self.events.append(json.loads(message.body))
        except ValueError:
            self.unparsable.append(message.body)

    async def __aexit__(self, *exc_info) -> None:
        if self._connection is not None:
            await self._connection.close()

    def of_type(self, event_type: str) -> list[dict]:
        return [e for e in self.events if e.get("type") == event_type]

    def types_seen(self) -> Counter:
        return Counter(e.get("type") for e in self.events)

    def assert_valid(self) -> Counter:
        """Validate every captured event; raise one AssertionError listing every violation. Returns the
        count of events per type, so a caller can also assert which types were seen."""
        problems = [f"unparsable message body: {body[:200]!r}" for body in self.unparsable]
        for envelope in self.events:
            try:
                validate_event(envelope)
            except ContractViolation as exc:
                problems.append(str(exc))
        if problems:
            raise AssertionError(f"{len(problems)} of {len(self.events) + len(self.unparsable)} captured events "
                                 "violate deploy/asyncapi/asyncapi.yaml:\n  " + "\n  ".join(problems[:50]))
        return self.types_seen()
