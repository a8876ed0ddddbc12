"""The transactional outbox and its relay.

`Outbox.record(session, event, subject)` writes the event in the same unit of work as the state change.
The relay publishes pending events in recording order with publisher confirms, then marks them sent.
States: pending -> sent -> purged (after the retention window). A crash between publish and mark
republishes the event (at-least-once); consumers drop the duplicate through their inbox. A lease lets only
one replica relay at a time; it is renewed while a batch is in flight.

The relay needs no transaction: one find of a batch and one `update_many` marking it. On nx-27017 those two
statements still wait for the process's transaction lock (a read there would otherwise see another
transaction's uncommitted events, and a write could be swallowed by its rollback); on a replica set they
run freely.
"""
from __future__ import annotations

import asyncio
import os
import socket
import time

from bson import ObjectId
from typing import Any

from pymongo import ASCENDING, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

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
    IndexSpec("outbox", [("sent_at_ms", ASCENDING)], name="sent_at_ms"),
    IndexSpec("inbox", [("handled_at_ms", ASCENDING)], name="handled_at_ms"),
]
PURGE_CHUNK = 1000
LEASE_SECONDS = 10


class Outbox:
    """Where a use case records the events its change causes.

    Two forms, both published by the same relay:
    - `record(session, event, subject)`: a document in the `outbox` collection, inside the unit of work of a
      change that spans documents (multi-document transaction).
    - Outbox in the aggregate: a change to ONE document carries its events in that same document (a keyed
      map `outbox.<event id>`, which works on nx as on MongoDB; `$push` of sub-documents does not), so the
      hot path is one atomic single-document write and needs no transaction: `insert(collection, doc,
      events)` (concurrent inserts share one `insert_many`: group commit) and `update(collection, filter,
      update, events)`. The relay collects pending events from every collection registered with `embed_in`.
    """

    def __init__(self, mongo: Mongo, source: str) -> None:
        self.mongo = mongo
        self.source = source
        self.listeners: list = []
        self.embedded: list[str] = []
        self._groups: dict[str, _GroupInsert] = {}
        # Where this process recorded events lately (collection name -> records): the relay looks only there
        # between its polls (another replica's records are found by the poll).
        self.recorded: dict[str, int] = {}

    def _note(self, collection: str) -> None:
        self.recorded[collection] = self.recorded.get(collection, 0) + 1

    def envelope(self, event: IntegrationEvent, subject: str) -> Envelope:
        correlation_id, causation_id = current_correlation()
        return Envelope(type=event.event_type, version=event.version, source=self.source, subject=subject,
                        correlation_id=correlation_id, causation_id=causation_id, data=event.model_dump(mode="json"))

    async def record(self, session: AsyncClientSession, event: IntegrationEvent, subject: str) -> Envelope:
        envelope = self.envelope(event, subject)
        await self.mongo.db["outbox"].insert_one({
            "_id": ObjectId(), "event_id": envelope.id, "type": envelope.type, "state": PENDING,
            "envelope": envelope.model_dump(mode="json"), "recorded_at": envelope.occurred_at, "attempts": 0,
        }, session=session)
        self._note("outbox")
        for listener in self.listeners:
            self.mongo.after_commit(listener)
        return envelope

    # -- the outbox in the aggregate --------------------------------------------------------------
    def embed_in(self, *collections: str) -> None:
        """Register collections whose documents carry their own pending events (the relay scans them)."""
        self.embedded.extend(c for c in collections if c not in self.embedded)

    def embedding(self, events: list[tuple[IntegrationEvent, str]]) -> tuple[dict, int]:
        """The fields that record `events` (event, subject) in a document: (`$set` fields, count)."""
        fields: dict = {}
        for event, subject in events:
            envelope = self.envelope(event, subject)
            fields[f"{EMBEDDED}.{envelope.id}"] = {"at_ns": _ordinal(), "envelope": envelope.model_dump(mode="json")}
        if fields:
            fields[EMBEDDED_PENDING] = True
        return fields, len(events)

    async def insert(self, collection: str, doc: dict, events: list[tuple[IntegrationEvent, str]]) -> None:
        """Insert one aggregate with its events; concurrent callers share one write. Raises DuplicateKeyError
        when a document with that key exists (nothing is written then, not even the events)."""
        fields, count = self.embedding(events)
        stored = {**doc, EMBEDDED: {}, EMBEDDED_SEQ: count, EMBEDDED_PENDING: bool(fields)}
        for key, value in fields.items():
            if key.startswith(EMBEDDED + "."):
                stored[EMBEDDED][key.split(".", 1)[1]] = value
        self._note(collection)
        session = self.mongo.current_session()
        if session is not None:  # inside a unit of work: part of it
            await self.mongo.db[collection].insert_one(stored, session=session)
            for listener in self.listeners:
                self.mongo.after_commit(listener)
            return
        group = self._groups.get(collection)
        if group is None:
            group = self._groups[collection] = _GroupInsert(self.mongo, collection)
        await group.insert(stored)
        self._wake()

    async def update(self, collection: str, filter: dict, update: dict,
                     events: list[tuple[IntegrationEvent, str]], *, upsert: bool = False):
        """One atomic single-document update that also records `events` in that document. The events are
        recorded only when the filter matched (a guarded update that refuses records nothing)."""
        fields, count = self.embedding(events)
        merged = {**update}
        if fields:
            self._note(collection)
            merged["$set"] = {**update.get("$set", {}), **fields}
            merged["$inc"] = {**update.get("$inc", {}), EMBEDDED_SEQ: count}
        session = self.mongo.current_session()
        if session is not None:  # inside a unit of work: part of it
            result = await self.mongo.db[collection].update_one(filter, merged, upsert=upsert, session=session)
        else:
            result = await self.mongo.read_committed(
                lambda: self.mongo.db[collection].update_one(filter, merged, upsert=upsert))
        if fields and (result.modified_count or result.upserted_id is not None):
            if session is not None:
                for listener in self.listeners:
                    self.mongo.after_commit(listener)
            else:
                self._wake()
        return result

    def _wake(self) -> None:
        for listener in self.listeners:
            listener()


EMBEDDED = "outbox"
EMBEDDED_SEQ = "outbox_seq"
EMBEDDED_PENDING = "outbox_pending"


def embedded_outbox_index(collection: str) -> IndexSpec:
    """The index the relay's scan of a collection with embedded events uses (add it to the service's INDEXES)."""
    return IndexSpec(collection, [(EMBEDDED_PENDING, ASCENDING)], name="outbox_pending")
_last_ordinal = 0


def _ordinal() -> int:
    """A process-wide increasing number: the order of events recorded in documents."""
    global _last_ordinal
    _last_ordinal = max(_last_ordinal + 1, time.time_ns())
    return _last_ordinal


class _GroupInsert:
    """Group commit: inserts that arrive while a write is in flight leave together in one `insert_many`."""

    MAX = 500

    def __init__(self, mongo: Mongo, collection: str) -> None:
        self.mongo = mongo
        self.collection = collection
        self.waiting: list[tuple[dict, asyncio.Future]] = []
        self.flushing = False

    async def insert(self, doc: dict) -> None:
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((doc, future))
        if not self.flushing:
            self.flushing = True
            asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:self.MAX], self.waiting[self.MAX:]
                failed: dict[int, Exception] = {}
                try:
                    await self.mongo.read_committed(lambda: self.mongo.db[self.collection].insert_many(
                        [doc for doc, _ in batch], ordered=False))
                except BulkWriteError as exc:
                    for error in exc.details.get("writeErrors", []):
                        failed[error["index"]] = DuplicateKeyError(error.get("errmsg", "duplicate key"), 11000) \
                            if error.get("code") == 11000 else OperationFailure(error.get("errmsg", ""), error.get("code"))
                except Exception as exc:  # the whole write failed: every caller hears it
                    failed = {i: exc for i in range(len(batch))}
                for index, (_, future) in enumerate(batch):
                    if not future.done():
                        future.set_exception(failed[index]) if index in failed else future.set_result(None)
        finally:
            self.flushing = False


class OutboxRelay:
    def __init__(self, mongo: Mongo, bus: Bus, outbox: Outbox, service: str, poll_interval: float = 0.5,
                 batch: int = 200, coalesce_s: float = 0.005) -> None:
        self.mongo = mongo
        self.bus = bus
        self.service = service
        self.poll_interval = poll_interval
        self.batch = batch
        self.coalesce_s = coalesce_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._wake = asyncio.Event()
        self._lease_until_ms = 0
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.outbox = outbox
        outbox.listeners.append(self._wake.set)
        # collection -> (local record count, monotonic time) when a scan of it last came back empty: until this
        # process records there again or a poll interval passes, scanning it again would find nothing new.
        self._empty_at: dict[str, tuple[int, float]] = {}

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        await self.mongo.read_committed(lambda: self.mongo.db["outbox_lease"].update_one(
            {"_id": "relay"}, {"$setOnInsert": {"owner": None, "until_ms": 0}}, upsert=True))
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
                if self.coalesce_s:
                    await asyncio.sleep(self.coalesce_s)  # let concurrent commits join this batch
                if await self._hold_lease():
                    published = await self.publish_pending()
                    embedded = await self.publish_embedded()
                    if published >= self.batch or embedded >= self.batch:
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

    async def _hold_lease(self, force: bool = False) -> bool:
        now_ms = int(time.time() * 1000)
        if not force and now_ms < self._lease_until_ms - LEASE_SECONDS * 500:
            return True  # renew only when half of the lease is gone
        result = await self.mongo.read_committed(lambda: self.mongo.db["outbox_lease"].update_one(
            {"_id": "relay", "$or": [{"until_ms": {"$lt": now_ms}}, {"owner": self.owner}]},
            {"$set": {"owner": self.owner, "until_ms": now_ms + LEASE_SECONDS * 1000}}))
        held = result.matched_count == 1
        self._lease_until_ms = now_ms + LEASE_SECONDS * 1000 if held else 0
        return held

    async def _keep_lease(self) -> None:
        """While a batch is in flight (a slow broker can take seconds to confirm), keep the lease ours."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            await self._hold_lease(force=True)

    def _worth_scanning(self, collection: str) -> bool:
        seen = self._empty_at.get(collection)
        if seen is None:
            return True
        count, at = seen
        return self.outbox.recorded.get(collection, 0) != count or time.monotonic() - at >= self.poll_interval

    def _scanned(self, collection: str, found: int) -> None:
        if found:
            self._empty_at.pop(collection, None)
        else:
            self._empty_at[collection] = (self.outbox.recorded.get(collection, 0), time.monotonic())

    async def publish_pending(self) -> int:
        """Publish a batch of pending events in recording order, then mark the confirmed ones sent.

        The batch is pipelined on one confirming channel (frames keep their order); only the prefix
        confirmed before the first failure is marked, so order is kept and nothing is marked unpublished.
        """
        if not self._worth_scanning("outbox"):
            return 0
        outbox = self.mongo.db["outbox"]
        pending = await self.mongo.read_committed(
            lambda: outbox.find({"state": PENDING}).sort("_id", ASCENDING).limit(self.batch).to_list())
        self._scanned("outbox", len(pending))
        metrics.OUTBOX_BACKLOG.labels(self.service).set(len(pending))
        if not pending:
            return 0
        envelopes = [Envelope.model_validate(doc["envelope"]) for doc in pending]
        keeper = asyncio.create_task(self._keep_lease())
        try:
            outcomes = await asyncio.gather(*(self.bus.publish(e) for e in envelopes), return_exceptions=True)
        finally:
            keeper.cancel()
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

    async def publish_embedded(self) -> int:
        """Publish the events recorded inside aggregates, in recording order, then clear them from their
        documents. A document that took a new event meanwhile keeps that one pending (its `outbox_seq` moved)."""
        if not self.outbox.embedded:
            return 0
        entries = []  # (ordinal, collection, doc id, seq seen, event id, envelope document)
        for name in self.outbox.embedded:
            if not self._worth_scanning(name):
                continue
            docs = await self.mongo.read_committed(lambda c=name: self.mongo.db[c].find(
                {EMBEDDED_PENDING: True}, {EMBEDDED: 1, EMBEDDED_SEQ: 1}).limit(self.batch).to_list())
            self._scanned(name, len(docs))
            for doc in docs:
                for event_id, entry in (doc.get(EMBEDDED) or {}).items():
                    entries.append((entry["at_ns"], name, doc["_id"], doc.get(EMBEDDED_SEQ), event_id, entry["envelope"]))
        if not entries:
            return 0
        entries.sort(key=lambda e: e[0])
        entries = entries[:self.batch * 2]
        envelopes = [Envelope.model_validate(e[5]) for e in entries]
        keeper = asyncio.create_task(self._keep_lease())
        try:
            outcomes = await asyncio.gather(*(self.bus.publish(e) for e in envelopes), return_exceptions=True)
        finally:
            keeper.cancel()
        confirmed = next((i for i, o in enumerate(outcomes) if isinstance(o, BaseException)), len(outcomes))
        done = entries[:confirmed]
        by_doc: dict[tuple[str, Any], tuple[Any, list[str]]] = {}
        for _, name, doc_id, seq, event_id, _ in done:
            by_doc.setdefault((name, doc_id), (seq, []))[1].append(event_id)
        clears: dict[str, list[UpdateOne]] = {}
        unsets: dict[str, list[UpdateOne]] = {}
        for (name, doc_id), (seq, event_ids) in by_doc.items():
            unset = {f"{EMBEDDED}.{event_id}": "" for event_id in event_ids}
            # Not pending any more unless the document took a new event meanwhile (its outbox_seq moved).
            clears.setdefault(name, []).append(
                UpdateOne({"_id": doc_id, EMBEDDED_SEQ: seq}, {"$unset": unset, "$set": {EMBEDDED_PENDING: False}}))
            unsets.setdefault(name, []).append(UpdateOne({"_id": doc_id}, {"$unset": unset}))
        for name, operations in clears.items():  # one command per collection for the whole batch
            result = await self.mongo.read_committed(
                lambda c=name, o=operations: self.mongo.db[c].bulk_write(o, ordered=False))
            if result.matched_count < len(operations):
                # Some documents took a new event meanwhile: they stay pending, only the published entries go.
                await self.mongo.read_committed(
                    lambda c=name: self.mongo.db[c].bulk_write(unsets[c], ordered=False))
        for envelope in envelopes[:confirmed]:
            metrics.EVENTS_PUBLISHED.labels(self.service, envelope.type).inc()
            metrics.OUTBOX_LAG.labels(self.service).observe((utcnow() - envelope.occurred_at).total_seconds())
        if confirmed < len(entries):
            raise outcomes[confirmed]
        return confirmed

    async def after_publish(self, doc: dict) -> None:
        """Hook between publish and mark (fault-injection tests crash here)."""

    async def mark_sent(self, doc_ids: list[ObjectId]) -> None:
        sent_at_ms = int(time.time() * 1000)
        await self.mongo.read_committed(lambda: self.mongo.db["outbox"].update_many(
            {"_id": {"$in": doc_ids}}, {"$set": {"state": SENT, "sent_at_ms": sent_at_ms}}))

    async def _note_failure(self, doc_id: ObjectId, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"[:500]
        try:
            await self.mongo.read_committed(lambda: self.mongo.db["outbox"].update_one(
                {"_id": doc_id}, {"$inc": {"attempts": 1}, "$set": {"last_error": error}}))
        except Exception:
            pass

    async def backlog(self) -> int:
        return await self.mongo.db["outbox"].count_documents({"state": PENDING})


async def purge_after_retention(mongo: Mongo, service: str, retention_hours: float, now_ms: int | None = None) -> dict:
    """Delete sent outbox events and inbox ids older than the retention window, a chunk at a time.

    Inside the window a redelivered event is still recognised by its inbox id; pending events are never
    purged. Both queries use a single-field index (`sent_at_ms`, `handled_at_ms`).
    """
    cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - int(retention_hours * 3600 * 1000)
    purged = {}
    for store, collection, query in (
            ("outbox", mongo.db["outbox"], {"sent_at_ms": {"$lt": cutoff}, "state": SENT}),
            ("inbox", mongo.db["inbox"], {"handled_at_ms": {"$lt": cutoff}})):
        total = 0
        while True:
            ids = [doc["_id"] for doc in await mongo.read_committed(
                lambda c=collection, q=query: c.find(q, {"_id": 1}).limit(PURGE_CHUNK).to_list())]
            if not ids:
                break
            result = await mongo.read_committed(lambda c=collection, i=ids: c.delete_many({"_id": {"$in": i}}))
            total += result.deleted_count
            if len(ids) < PURGE_CHUNK:
                break
        metrics.RETENTION_PURGED.labels(service, store).inc(total)
        purged[store] = total
    if any(purged.values()):
        log.info("bus.retention_purged", cutoff_ms=cutoff, **purged)
    return purged
