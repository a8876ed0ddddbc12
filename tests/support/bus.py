"""The broker as tests see it: a per-run namespace, what was really published, and raw publishing."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import uuid
from typing import Any

import aio_pika

from libs.bus import Names

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SERVICES = ("gateway", "catalog", "stock", "orders", "membership", "notifications", "settlement")


def new_namespace() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


async def delete_bus_namespace(namespace: str, amqp_url: str = AMQP_URL) -> None:
    """Delete every exchange and queue a run created under `namespace`."""
    from libs.bus import Names
    names = Names(namespace)
    queues = [names.audit] + [q for s in SERVICES for q in (names.queue(s), names.retry_queue(s), names.dlq(s))]
    queues += [q for q in _broker_queue_names() if q.startswith(namespace)]
    connection = await aio_pika.connect(amqp_url)
    try:
        for queue in dict.fromkeys(queues):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
            with contextlib.suppress(Exception):
                await channel.close()
        for exchange in (names.exchange, names.dlx):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(exchange)
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()


def _broker_queue_names() -> list[str]:
    try:
        out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip() and line.strip() != "name"]


class EventTap:
    """A private queue bound to the run's exchange: what services really published on the broker.

    Use as `async with EventTap(namespace, "orders.#") as tap:` or `await tap.start(...)` / `await tap.stop()`.
    `events` holds the envelopes as published (dicts).
    """

    def __init__(self, namespace: str, *keys: str) -> None:
        self.namespace = namespace
        self.keys = keys or ("#",)
        self.events: list[dict] = []
        self.unparsable: list[bytes] = []  # bodies that are not JSON (a contract test reports them)
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self, *keys: str) -> EventTap:
        self.connection = await aio_pika.connect(AMQP_URL)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(Names(self.namespace).exchange, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(f"{self.namespace}tap.{uuid.uuid4().hex[:8]}", exclusive=True,
                                            auto_delete=True)
        for key in keys or self.keys:
            await queue.bind(exchange, routing_key=key)

        async def collect(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                try:
                    self.events.append(json.loads(message.body))
                except ValueError:
                    self.unparsable.append(message.body)

        await queue.consume(collect)
        return self

    async def stop(self) -> None:
        if self.connection is not None:
            await self.connection.close()
            self.connection = None

    async def __aenter__(self) -> EventTap:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def of(self, event_type: str, **data: Any) -> list[dict]:
        """The captured events of one type whose data has the given field values."""
        return [e for e in self.events if e["type"] == event_type
                and all(e["data"].get(k) == v for k, v in data.items())]

    async def wait_for(self, event_type: str, count: int = 1, timeout: float = 15.0, **data: Any) -> list[dict]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found := self.of(event_type, **data)) < count:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{count} x {event_type} {data} not published within {timeout}s "
                                     f"(got {len(found)})")
            await asyncio.sleep(0.05)
        return found


async def publish_raw(namespace: str, envelope: dict, routing_key: str | None = None) -> None:
    """Publish an envelope as another service would (consumer, redelivery and poison tests)."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(Names(namespace).exchange, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        await exchange.publish(aio_pika.Message(json.dumps(envelope, default=str).encode(),
                                                message_id=str(envelope.get("id", uuid.uuid4().hex)),
                                                content_type="application/json"),
                               routing_key=routing_key or envelope["type"])
    finally:
        await connection.close()
