"""The event bus on aio-pika: envelope, topology, confirmed publishing and the consumer loop.

Topology (names carry the settings' bus_namespace prefix):
  exchange  o2o.events  (topic, durable)          routing key = event type
  exchange  o2o.dlx     (direct, durable)
  queue     <service>.events  (quorum)  bound to the keys the service handles; rejects go to <service>.dlq
  queue     <service>.retry   (quorum, message TTL) dead-letters back into <service>.events
  queue     <service>.dlq     (quorum)  bound to o2o.dlx with key <service>.dlq
  queue     o2o.events.audit  (quorum, bounded) bound to '#': every event, for replay and audit

A message is acked only after its effect (and the inbox record) committed, or after a copy was safely
published to the retry queue or the DLQ. Robust objects are kept referenced so that aio-pika restores
channels, queues, bindings and consumers after the broker drops the connection.
"""
from __future__ import annotations

import asyncio
import json
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustConnection
from yarl import URL
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError, DuplicateKeyError
from structlog.contextvars import bind_contextvars, clear_contextvars, get_contextvars

from libs import metrics
from libs.logging import get_logger
from libs.mongo import Mongo
from libs.settings import ServiceSettings

log = get_logger("bus")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """CloudEvents-like envelope of every integration event (docs/ARCHITECTURE.md §3)."""
    model_config = ConfigDict(extra="forbid")
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: str
    version: int = 1
    source: str
    occurred_at: datetime = Field(default_factory=utcnow)
    subject: str
    correlation_id: str | None = None
    causation_id: str | None = None
    data: dict[str, Any]


class IntegrationEvent(BaseModel):
    """Base of the events a service publishes; each service owns its event models.

    Subclasses set `event_type` (past tense, e.g. "orders.order.placed") and `version`.
    """
    model_config = ConfigDict(extra="forbid")
    event_type: ClassVar[str]
    version: ClassVar[int] = 1


class Names:
    def __init__(self, namespace: str) -> None:
        self.ns = namespace
        self.exchange = f"{namespace}o2o.events"
        self.dlx = f"{namespace}o2o.dlx"
        self.audit = f"{namespace}o2o.events.audit"

    def queue(self, service: str) -> str:
        return f"{self.ns}{service}.events"

    def retry_queue(self, service: str) -> str:
        return f"{self.ns}{service}.retry"

    def dlq(self, service: str) -> str:
        return f"{self.ns}{service}.dlq"


Handler = Callable[[Envelope, AsyncClientSession], Awaitable[None]]
# A batch handler takes every fresh event of its type in a delivered batch at once (simple effects such as
# counters can then be one write for the whole batch).
BatchHandler = Callable[[list[Envelope], AsyncClientSession], Awaitable[None]]


class _Delivery:
    """One delivered message, parsed, with what the consumer needs to settle it."""

    __slots__ = ("message", "envelope", "attempt")

    def __init__(self, message: AbstractIncomingMessage, envelope: Envelope) -> None:
        self.message = message
        self.envelope = envelope
        self.attempt = int((message.headers or {}).get("x-attempt", 1))


class Bus:
    """One robust connection per process; a confirmed publisher channel and one consumer channel."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.service = settings.service_name
        self.names = Names(settings.bus_namespace)
        self.connection: AbstractRobustConnection | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._consume_channel: AbstractRobustChannel | None = None
        self._exchange = None
        self._dlx = None
        self._queue = None
        self._retry_queue = None
        self._dlq = None
        self._consumer_tag: str | None = None
        self._handlers: dict[str, Handler] = {}
        self._batch_handlers: dict[str, BatchHandler] = {}
        self._mongo: Mongo | None = None
        self._publish_lock = asyncio.Lock()
        self._deliveries: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._worker: asyncio.Task | None = None

    # -- connection ------------------------------------------------------------------------------
    async def connect(self) -> None:
        # aiormq takes the connection name (shown by the broker, used by operators) from the URL.
        url = URL(self.settings.amqp_url).update_query(name=self.service)
        self.connection = await aio_pika.connect_robust(url, reconnect_interval=1.0)
        self.connection.close_callbacks.add(self._on_close)
        self.connection.reconnect_callbacks.add(self._on_reconnect)
        metrics.BUS_CONNECTED.labels(self.service).set(1)
        self._publish_channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self._exchange = await self._publish_channel.declare_exchange(
            self.names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        self._dlx = await self._publish_channel.declare_exchange(
            self.names.dlx, aio_pika.ExchangeType.DIRECT, durable=True)
        # Every event lands in a bounded audit queue too (replay, debugging, other teams' backfill), so an
        # event type nobody subscribes to yet is still routable; `mandatory` catches a broken topology.
        self._audit = await self._publish_channel.declare_queue(self.names.audit, durable=True, arguments={
            "x-queue-type": "quorum", "x-max-length": 100_000, "x-overflow": "drop-head"})
        await self._audit.bind(self._exchange, routing_key="#")

    def _on_close(self, *_: Any) -> None:
        metrics.BUS_CONNECTED.labels(self.service).set(0)
        log.warning("bus.connection_lost")

    def _on_reconnect(self, *_: Any) -> None:
        metrics.BUS_CONNECTED.labels(self.service).set(1)
        log.info("bus.reconnected")

    @property
    def connected(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    async def check(self) -> None:
        if not self.connected:
            raise ConnectionError("broker connection is not open")

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
            metrics.BUS_CONNECTED.labels(self.service).set(0)

    # -- publishing ------------------------------------------------------------------------------
    @staticmethod
    def message_for(envelope: Envelope, headers: dict[str, Any] | None = None) -> aio_pika.Message:
        return aio_pika.Message(
            body=envelope.model_dump_json().encode(), content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=envelope.id, type=envelope.type,
            correlation_id=envelope.correlation_id, timestamp=envelope.occurred_at, app_id=envelope.source,
            headers=headers or {})

    async def publish(self, envelope: Envelope, timeout: float = 10.0) -> None:
        """Publish with publisher confirms and `mandatory`: an unroutable event raises."""
        assert self._exchange is not None, "bus not connected"
        await self._exchange.publish(self.message_for(envelope), routing_key=envelope.type,
                                     mandatory=True, timeout=timeout)

    async def _publish_raw(self, exchange, message: aio_pika.Message, routing_key: str) -> None:
        await exchange.publish(message, routing_key=routing_key, mandatory=True, timeout=10.0)

    # -- consuming -------------------------------------------------------------------------------
    def on(self, event_type: str, handler: Handler) -> None:
        """Register the handler of one event type (one per type per service)."""
        self._handlers[event_type] = handler

    def on_batch(self, event_type: str, handler: BatchHandler) -> None:
        """Register a handler that takes all fresh events of this type of a delivered batch in one call."""
        self._batch_handlers[event_type] = handler

    def handles(self, event_type: str) -> bool:
        return event_type in self._handlers or event_type in self._batch_handlers

    async def declare_consumer_topology(self) -> None:
        assert self.connection is not None
        self._consume_channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        await self._consume_channel.set_qos(prefetch_count=self.settings.bus_prefetch)
        channel = self._consume_channel
        exchange = await channel.declare_exchange(self.names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(self.names.dlx, aio_pika.ExchangeType.DIRECT, durable=True)
        queue_name = self.names.queue(self.service)
        dlq_name = self.names.dlq(self.service)
        self._dlq = await channel.declare_queue(dlq_name, durable=True, arguments={"x-queue-type": "quorum"})
        await self._dlq.bind(dlx, routing_key=dlq_name)
        self._queue = await channel.declare_queue(queue_name, durable=True, arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.names.dlx,
            "x-dead-letter-routing-key": dlq_name,
            # A message that keeps killing the consumer process ends in the DLQ instead of looping forever.
            "x-delivery-limit": max(self.settings.bus_max_attempts * 4, 20),
        })
        self._retry_queue = await channel.declare_queue(self.names.retry_queue(self.service), durable=True, arguments={
            "x-queue-type": "quorum",
            "x-message-ttl": self.settings.bus_retry_delay_ms,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue_name,
        })
        for event_type in sorted({*self._handlers, *self._batch_handlers}):
            await self._queue.bind(exchange, routing_key=event_type)
        self._consume_exchange = exchange
        self._consume_dlx = dlx

    async def start_consuming(self, mongo: Mongo) -> None:
        self._mongo = mongo
        if self._queue is None:
            await self.declare_consumer_topology()
        self._worker = asyncio.create_task(self._drain(), name=f"bus-consumer-{self.service}")
        self._consumer_tag = await self._queue.consume(self._on_message, no_ack=False)

    async def stop_consuming(self) -> None:
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await self._queue.cancel(self._consumer_tag)
            except Exception:  # the channel may already be gone
                pass
            self._consumer_tag = None
        if self._worker is not None:
            # Messages still waiting here were never acked: the broker delivers them again.
            self._worker.cancel()
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):
                pass
            self._worker = None

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        """Deliveries are queued and handled in batches by one worker, one unit of work per batch."""
        self._deliveries.put_nowait(message)

    async def _drain(self) -> None:
        linger = self.settings.bus_batch_linger_ms / 1000
        while True:
            batch = [await self._deliveries.get()]
            # Whatever arrived while the previous batch was being handled forms the next one; a batch that
            # would start small lingers once, so that a stream of events is handled in fewer units of work.
            if linger and self._deliveries.qsize() < self.settings.bus_batch_size // 4:
                await asyncio.sleep(linger)
            while len(batch) < self.settings.bus_batch_size and not self._deliveries.empty():
                batch.append(self._deliveries.get_nowait())
            try:
                await self._handle_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # settling failed (e.g. the channel went away): the broker redelivers
                log.exception("bus.batch_failed")

    async def _handle_batch(self, messages: list[AbstractIncomingMessage]) -> None:
        deliveries = []
        for message in messages:
            delivery = await self._parse(message)
            if delivery is not None:
                deliveries.append(delivery)
        if len(deliveries) == 1:
            await self._process_alone(deliveries[0])
            return
        if not deliveries:
            return
        metrics.CONSUMER_BATCH_SIZE.labels(self.service).observe(len(deliveries))
        started = time.perf_counter()
        try:
            fresh = await self._handle_together(deliveries)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Somebody in the batch failed: handle each alone, so only the culprit is retried or dead-lettered.
            log.info("bus.batch_split", size=len(deliveries), error=f"{type(exc).__name__}: {exc}"[:300])
            for delivery in deliveries:
                await self._process_alone(delivery)
            return
        elapsed = (time.perf_counter() - started) / len(deliveries)
        for delivery in deliveries:  # a second copy of an event within the batch is a duplicate too
            outcome = "processed" if delivery.envelope.id in fresh else "duplicate"
            fresh.discard(delivery.envelope.id)
            self._count(delivery, outcome, elapsed)
        await self._ack_all([d.message for d in deliveries])

    async def _parse(self, message: AbstractIncomingMessage) -> _Delivery | None:
        clear_contextvars()
        try:
            envelope = Envelope.model_validate_json(message.body)
        except ValidationError as exc:
            bind_contextvars(service=self.service, message_id=message.message_id)
            await self._dead_letter(message, "unknown", f"malformed envelope: {exc}", attempt=1)
            return None
        if not self.handles(envelope.type):
            self._bind(envelope)
            await self._dead_letter(message, envelope.type, "no handler for this event type", attempt=1)
            return None
        return _Delivery(message, envelope)

    def _bind(self, envelope: Envelope) -> None:
        clear_contextvars()
        bind_contextvars(service=self.service, event_id=envelope.id, event_type=envelope.type,
                         correlation_id=envelope.correlation_id or envelope.id, causation_id=envelope.id)

    async def _process_alone(self, delivery: _Delivery) -> None:
        envelope, attempt = delivery.envelope, delivery.attempt
        self._bind(envelope)
        started = time.perf_counter()
        try:
            processed = await self._handle_together([delivery])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.warning("bus.handler_failed", attempt=attempt, error=error)
            metrics.CONSUMER_LATENCY.labels(self.service, envelope.type).observe(time.perf_counter() - started)
            if attempt >= self.settings.bus_max_attempts:
                await self._dead_letter(delivery.message, envelope.type, error, attempt, traceback.format_exc())
            else:
                await self._retry(delivery.message, envelope.type, error, attempt)
            return
        await self._settle(delivery, "processed" if processed else "duplicate", time.perf_counter() - started)

    async def _settle(self, delivery: _Delivery, outcome: str, seconds: float) -> None:
        await delivery.message.ack()
        self._count(delivery, outcome, seconds)

    def _count(self, delivery: _Delivery, outcome: str, seconds: float) -> None:
        envelope = delivery.envelope
        metrics.CONSUMER_LATENCY.labels(self.service, envelope.type).observe(seconds)
        metrics.EVENTS_CONSUMED.labels(self.service, envelope.type, outcome).inc()
        log.debug("bus.event_handled", event_id=envelope.id, outcome=outcome, attempt=delivery.attempt)

    @staticmethod
    async def _ack_all(messages: list[AbstractIncomingMessage]) -> None:
        """Settle a handled batch: one `multiple` ack when it came on one channel (deliveries arrive in order
        and everything before them is settled already), else one ack each."""
        if len({id(m.channel) for m in messages}) == 1:
            await max(messages, key=lambda m: m.delivery_tag).ack(multiple=True)
            return
        for message in messages:
            await message.ack()

    async def _handle_together(self, deliveries: list[_Delivery]) -> set[str]:
        """Run the handlers of a batch and record its event ids in the inbox, in one unit of work.

        Returns the ids that had an effect now (the others were handled before: duplicates).
        """
        assert self._mongo is not None
        inbox = self._mongo.db["inbox"]

        async def unit(session: AsyncClientSession) -> set[str]:
            ids = list(dict.fromkeys(d.envelope.id for d in deliveries))
            seen = {doc["_id"] for doc in await inbox.find({"_id": {"$in": ids}}, {"_id": 1},
                                                           session=session).to_list()}
            fresh: dict[str, Envelope] = {}
            for delivery in deliveries:
                if delivery.envelope.id not in seen and delivery.envelope.id not in fresh:
                    fresh[delivery.envelope.id] = delivery.envelope
            if not fresh:
                return set()
            now = utcnow()
            await inbox.insert_many([{"_id": e.id, "type": e.type, "handled_at": now,
                                      "handled_at_ms": int(now.timestamp() * 1000)} for e in fresh.values()],
                                    session=session)
            await self._run_handlers(list(fresh.values()), session)
            return set(fresh)

        try:
            return await self._mongo.transaction(unit)
        except (DuplicateKeyError, BulkWriteError) as exc:
            if "inbox" in str(exc) and len(deliveries) == 1:
                return set()  # a concurrent redelivery committed first
            raise

    async def _run_handlers(self, envelopes: list[Envelope], session: AsyncClientSession) -> None:
        batched: dict[str, list[Envelope]] = {}
        for envelope in envelopes:
            if envelope.type in self._batch_handlers:
                batched.setdefault(envelope.type, []).append(envelope)
                continue
            self._bind(envelope)  # the events this handler records carry this event's correlation
            await self._handlers[envelope.type](envelope, session)
        for event_type, group in batched.items():
            self._bind(group[0])
            await self._batch_handlers[event_type](group, session)

    async def _retry(self, message: AbstractIncomingMessage, event_type: str, error: str, attempt: int) -> None:
        headers = dict(message.headers or {})
        headers.update({"x-attempt": attempt + 1, "x-last-error": error[:1000]})
        copy = aio_pika.Message(body=message.body, headers=headers, content_type=message.content_type,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message.message_id,
                                type=message.type, correlation_id=message.correlation_id)
        try:
            await self._publish_raw(self._consume_channel.default_exchange, copy,
                                    self.names.retry_queue(self.service))
        except Exception:
            log.exception("bus.retry_publish_failed")
            return  # not acked: the broker redelivers it
        await message.ack()
        metrics.EVENTS_CONSUMED.labels(self.service, event_type, "retried").inc()

    async def _dead_letter(self, message: AbstractIncomingMessage, event_type: str, error: str, attempt: int,
                           trace: str = "") -> None:
        headers = dict(message.headers or {})
        headers.update({"x-attempt": attempt, "x-error": error[:1000], "x-traceback": trace[-2000:],
                        "x-original-routing-key": message.routing_key or "", "x-dead-lettered-at": utcnow().isoformat(),
                        "x-service": self.service})
        copy = aio_pika.Message(body=message.body, headers=headers, content_type=message.content_type,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT, message_id=message.message_id,
                                type=message.type, correlation_id=message.correlation_id)
        try:
            await self._publish_raw(self._consume_dlx, copy, self.names.dlq(self.service))
        except Exception:
            log.exception("bus.dead_letter_publish_failed")
            return
        await message.ack()
        metrics.EVENTS_CONSUMED.labels(self.service, event_type, "dead_lettered").inc()
        log.error("bus.dead_lettered", error=error, attempt=attempt)

    async def consumer_count(self) -> int:
        """Consumers on this service's queue, as the broker sees them (passive declare)."""
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(self.names.queue(self.service), passive=True)
            return queue.declaration_result.consumer_count
        finally:
            await channel.close()


def current_correlation() -> tuple[str | None, str | None]:
    ctx = get_contextvars()
    return ctx.get("correlation_id"), ctx.get("causation_id")


def dumps(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=False)
