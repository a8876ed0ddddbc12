"""The transactional outbox and its relay.

`Outbox.record(session, event, subject)` writes the event in the same transaction as the state change.
The relay publishes pending events in recording order with publisher confirms, then marks them sent.
States: pending -> sent. A crash between publish and mark republishes the event (at-least-once);
consumers drop the duplicate through their inbox. A lease lets only one replica relay at a time.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time

from bson import ObjectId
from pymongo import ASCENDING
from pymongo.asynchronous.client_session import AsyncClientSession

from libs import metrics
from libs.bus import Bus, Envelope, IntegrationEvent, current_correlation, utcnow
from libs.logging import get_logger
from libs.mongo import IndexSpec, Mongo

log = get_logger("outbox")

PENDING = "pending"
SENT = "sent"
OUTBOX_INDEXES = [
    IndexSpec("outbox", [("state", ASCENDING)], name="state"),
    IndexSpec("outbox", [("event_id", ASCENDING)], unique=True, name="event_id_unique"),
]
LEASE_SECONDS = 10


class Outbox:
    def __init__(self, mongo: Mongo, source: str) -> None:
        self.mongo = mongo
        self.source = source
        self.listeners: list = []

    async def record(self, session: AsyncClientSession, event: IntegrationEvent, subject: str) -> Envelope:
        correlation_id, causation_id = current_correlation()
        envelope = Envelope(type=event.event_type, version=event.version, source=self.source, subject=subject,
                            correlation_id=correlation_id, causation_id=causation_id,
                            data=event.model_dump(mode="json"))
        await self.mongo.db["outbox"].insert_one({
            "_id": ObjectId(), "event_id": envelope.id, "type": envelope.type, "state": PENDING,
            "envelope": envelope.model_dump(mode="json"), "recorded_at": envelope.occurred_at, "attempts": 0,
        }, session=session)
        for listener in self.listeners:
            self.mongo.after_commit(listener)
        return envelope


class OutboxRelay:
    def __init__(self, mongo: Mongo, bus: Bus, outbox: Outbox, service: str, poll_interval: float = 0.5,
                 batch: int = 200) -> None:
        self.mongo = mongo
        self.bus = bus
        self.service = service
        self.poll_interval = poll_interval
        self.batch = batch
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._wake = asyncio.Event()
        self._lease_until_ms = 0
        self._task: asyncio.Task | None = None
        self._stopping = False
        outbox.listeners.append(self._wake.set)

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        await self.mongo.transaction(lambda s: self.mongo.db["outbox_lease"].update_one(
            {"_id": "relay"}, {"$setOnInsert": {"owner": None, "until_ms": 0}},
            upsert=True, session=s))
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self.service}")

    async def stop(self) -> None:
        if self._task is not None:
            # The flag ends the loop even when the cancellation is lost: on Python 3.11 `asyncio.wait_for`
            # swallows a cancel that races with the wake event completing (gh-86296), and stop() then hung.
            self._stopping = True
            self._wake.set()
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def _run(self) -> None:
        backoff = self.poll_interval
        while not self._stopping:
            try:
                self._wake.clear()
                if await self._hold_lease():
                    published = await self.publish_pending()
                    if published >= self.batch:
                        continue
                backoff = self.poll_interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.PUBLISH_FAILURES.labels(self.service).inc()
                log.warning("outbox.relay_error", error=f"{type(exc).__name__}: {exc}")
                backoff = min(backoff * 2, 5.0)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=backoff)
            except TimeoutError:
                pass

    async def _hold_lease(self) -> bool:
        now_ms = int(time.time() * 1000)
        if now_ms < self._lease_until_ms - LEASE_SECONDS * 500:
            return True  # renew only when half of the lease is gone

        async def take(session):
            result = await self.mongo.db["outbox_lease"].update_one(
                {"_id": "relay", "$or": [{"until_ms": {"$lt": now_ms}}, {"owner": self.owner}]},
                {"$set": {"owner": self.owner, "until_ms": now_ms + LEASE_SECONDS * 1000}}, session=session)
            return result.matched_count == 1

        held = await self.mongo.transaction(take)
        self._lease_until_ms = now_ms + LEASE_SECONDS * 1000 if held else 0
        return held

    async def publish_pending(self) -> int:
        """Publish a batch of pending events in recording order, then mark the confirmed ones sent.

        The batch is pipelined on one confirming channel (frames keep their order); only the prefix
        confirmed before the first failure is marked, so order is kept and nothing is marked unpublished.
        """
        outbox = self.mongo.db["outbox"]
        pending = await self.mongo.read_committed(
            lambda: outbox.find({"state": PENDING}).sort("_id", ASCENDING).limit(self.batch).to_list())
        metrics.OUTBOX_BACKLOG.labels(self.service).set(len(pending))
        if not pending:
            return 0
        envelopes = [Envelope.model_validate(doc["envelope"]) for doc in pending]
        outcomes = await asyncio.gather(*(self.bus.publish(e) for e in envelopes), return_exceptions=True)
        confirmed = 0
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                break
            confirmed += 1
        done = pending[:confirmed]
        if done:
            for doc in done:
                await self.after_publish(doc)
            await self.mark_sent([doc["_id"] for doc in done])
            for doc, envelope in zip(done, envelopes):
                metrics.EVENTS_PUBLISHED.labels(self.service, envelope.type).inc()
                metrics.OUTBOX_LAG.labels(self.service).observe((utcnow() - doc["recorded_at"]).total_seconds())
        if confirmed < len(pending):
            failure = outcomes[confirmed]
            await self._note_failure(pending[confirmed]["_id"], failure)
            raise failure
        metrics.OUTBOX_BACKLOG.labels(self.service).set(max(len(pending) - confirmed, 0))
        return confirmed

    async def after_publish(self, doc: dict) -> None:
        """Hook between publish and mark (fault-injection tests crash here)."""

    async def mark_sent(self, doc_ids: list[ObjectId]) -> None:
        sent_at_ms = int(time.time() * 1000)
        await self.mongo.transaction(lambda s: self.mongo.db["outbox"].update_many(
            {"_id": {"$in": doc_ids}}, {"$set": {"state": SENT, "sent_at_ms": sent_at_ms}}, session=s))

    async def _note_failure(self, doc_id: ObjectId, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:500]
        try:
            await self.mongo.transaction(lambda s: self.mongo.db["outbox"].update_one(
                {"_id": doc_id}, {"$inc": {"attempts": 1}, "$set": {"last_error": error}}, session=s))
        except Exception:
            pass

    async def backlog(self) -> int:
        return await self.mongo.db["outbox"].count_documents({"state": PENDING})
