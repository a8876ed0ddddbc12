"""One AsyncMongoClient per process, index creation at start-up, and the transaction helper.

Every state change of a service goes through `Mongo.transaction(fn)`, so the change, its outbox events
and its inbox record commit together or not at all. On a real replica set, transactions run concurrently
and transient conflicts are retried. The local nx-27017 wire server shares one SQLite connection per
database and cannot isolate concurrent transactions, so when the server is not a replica-set member the
helper runs this process's transactions one at a time ("auto" mode).
"""
from __future__ import annotations

import asyncio
from contextlib import contextmanager
from contextvars import ContextVar
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pymongo import AsyncMongoClient, IndexModel
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError

from libs.logging import get_logger
from libs.refusal import CONFLICT, Refusal

T = TypeVar("T")
log = get_logger("mongo")
TRANSIENT = "TransientTransactionError"
UNKNOWN_COMMIT = "UnknownTransactionCommitResult"
_after_commit: ContextVar[list | None] = ContextVar("after_commit", default=None)
# The session of the unit of work this task is inside, so a use case called from another use case (or from a
# consumer's inbox transaction, or the idempotency guard) joins it instead of opening a second one.
_current_session: ContextVar[AsyncClientSession | None] = ContextVar("current_session", default=None)
COMMIT_ATTEMPTS = 5


@dataclass
class IndexSpec:
    collection: str
    keys: list[tuple[str, int]]
    unique: bool = False
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def model(self) -> IndexModel:
        kw = dict(self.options)
        if self.name:
            kw["name"] = self.name
        return IndexModel(self.keys, unique=self.unique, **kw)


class ConcurrencyConflict(Exception):
    """An aggregate changed under us (optimistic version check failed); the caller may retry."""


class Mongo:
    def __init__(self, url: str, database: str, serialize_transactions: str = "auto", app_name: str = "o2o") -> None:
        self.client: AsyncMongoClient = AsyncMongoClient(url, tz_aware=True, appname=app_name,
                                                         serverSelectionTimeoutMS=5000, connectTimeoutMS=3000)
        self.db = self.client[database]
        self._serialize_mode = serialize_transactions
        self._serialize: bool | None = None
        self._lock = asyncio.Lock()

    async def start(self, indexes: list[IndexSpec], collections: list[str] = ()) -> None:
        await self.ping()
        if self._serialize_mode == "auto":
            hello = await self.client.admin.command("hello")
            self._serialize = not (hello.get("setName") or hello.get("msg") == "isdbgrid")
        else:
            self._serialize = self._serialize_mode.lower() in ("1", "true", "yes")
        existing = set(await self.db.list_collection_names())
        wanted = {spec.collection for spec in indexes} | set(collections) | {"outbox", "inbox", "idempotency"}
        for name in sorted(wanted - existing):
            try:
                await self.db.create_collection(name)
            except OperationFailure:
                pass  # created concurrently by another replica
        by_collection: dict[str, list[IndexModel]] = {}
        for spec in indexes:
            by_collection.setdefault(spec.collection, []).append(spec.model())
        for name, models in by_collection.items():
            await self.db[name].create_indexes(models)
        log.info("mongo.ready", database=self.db.name, serialized_transactions=self._serialize)

    async def ensure_collections(self, names) -> None:
        """Create missing collections; serialized with transactions (DDL inside another's open transaction
        breaks it on nx). Safe when replicas race: an existing collection is fine."""
        async def create() -> None:
            existing = set(await self.db.list_collection_names())
            for name in names:
                if name not in existing:
                    try:
                        await self.db.create_collection(name)
                    except OperationFailure:
                        pass  # created concurrently by another replica
        await self.read_committed(create)

    async def ping(self) -> None:
        await self.client.admin.command("ping")

    async def close(self) -> None:
        await self.client.close()

    @staticmethod
    def after_commit(callback: Callable[[], None]) -> None:
        """Run `callback` once the current transaction commits (at once outside a transaction)."""
        pending = _after_commit.get()
        if pending is None:
            callback()
        elif callback not in pending:
            pending.append(callback)

    @staticmethod
    def current_session() -> AsyncClientSession | None:
        """The session of the unit of work in progress in this task, if any."""
        return _current_session.get()

    async def transaction(self, fn: Callable[[AsyncClientSession], Awaitable[T]], *, max_attempts: int = 20) -> T:
        """Run `fn(session)` as one unit of work, or as part of the one already in progress (re-entrant).

        The outermost call owns the transaction: it retries the whole unit on a transient error or a
        `ConcurrencyConflict`, and retries only the commit when the commit's outcome is unknown (re-running a
        unit that did commit would answer a success as a conflict). Inner calls join its session; their errors
        reach the outer call, which aborts everything.
        """
        joined = _current_session.get()
        if joined is not None:
            return await fn(joined)
        token = _after_commit.set([])
        try:
            if self._serialize:
                async with self._lock:
                    result = await self._run_transaction(fn, max_attempts)
            else:
                result = await self._run_transaction(fn, max_attempts)
            callbacks = list(_after_commit.get() or [])
        finally:
            _after_commit.reset(token)
        for callback in callbacks:
            callback()
        return result

    async def read_committed(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run a read that must not see another transaction's uncommitted writes (matters on nx only)."""
        if self._serialize and _current_session.get() is None:
            async with self._lock:
                return await fn()
        return await fn()

    async def _run_transaction(self, fn, max_attempts: int):
        delay = 0.005
        for attempt in range(1, max_attempts + 1):
            _after_commit.set([])
            async with self.client.start_session() as session:
                token = _current_session.set(session)
                try:
                    await session.start_transaction()
                    try:
                        result = await fn(session)
                    except BaseException:
                        if session.in_transaction:
                            await session.abort_transaction()
                        raise
                    await self._commit(session)
                    return result
                except (ConcurrencyConflict, PyMongoError) as exc:
                    retryable = isinstance(exc, ConcurrencyConflict) or exc.has_error_label(TRANSIENT)
                    if not retryable or attempt == max_attempts:
                        raise
                finally:
                    _current_session.reset(token)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
        raise RuntimeError("unreachable")

    @staticmethod
    async def _commit(session: AsyncClientSession) -> None:
        """Commit; when the outcome is unknown (connection lost mid-commit) ask again: commit is idempotent."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                await session.commit_transaction()
                return
            except PyMongoError as exc:
                if not exc.has_error_label(UNKNOWN_COMMIT) or attempt == COMMIT_ATTEMPTS:
                    raise
                await asyncio.sleep(0.01 * attempt)


async def wait_for_mongo(url: str, timeout: float = 30.0) -> None:
    client: AsyncMongoClient = AsyncMongoClient(url, serverSelectionTimeoutMS=1000)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while True:
            try:
                await client.admin.command("ping")
                return
            except (ConnectionFailure, PyMongoError):
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.3)
    finally:
        await client.close()


@contextmanager
def refuse_duplicates(code: str, detail: str, kind: str = CONFLICT, **extensions):
    """A lost unique-key race (another request created the same thing first) becomes a refusal with words."""
    try:
        yield
    except DuplicateKeyError:
        raise Refusal(code, detail, kind=kind, **extensions) from None


async def insert_versioned(collection, doc: dict, session) -> dict:
    """Insert a new aggregate at version 1."""
    new = {**doc, "version": 1}
    await collection.insert_one(new, session=session)
    return new


async def replace_versioned(collection, doc: dict, session) -> dict:
    """Replace an aggregate only if nobody changed it since it was read (optimistic version).

    Raises ConcurrencyConflict otherwise, which `Mongo.transaction` retries from the start. A document
    stored without a version matches on its absence.
    """
    expected = doc.get("version")
    new = {**doc, "version": (expected or 0) + 1}
    version_filter = {"$exists": False} if expected is None else expected
    result = await collection.replace_one({"_id": doc["_id"], "version": version_filter}, new, session=session)
    if result.matched_count != 1:
        raise ConcurrencyConflict(f"{collection.name} {doc['_id']} changed concurrently")
    return new


class VersionedRepository:
    """A repository of one aggregate kind: one document per aggregate in the collection `name`, added at
    version 1 and saved with the optimistic version check (a concurrent change retries the unit of work)."""

    name = ""

    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.collection = mongo.db[self.name]

    async def get(self, aggregate_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": aggregate_id}, session=session)

    async def add(self, doc: dict, session) -> dict:
        return await insert_versioned(self.collection, doc, session)

    async def save(self, doc: dict, session) -> dict:
        return await replace_versioned(self.collection, doc, session)
