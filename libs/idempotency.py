"""`Idempotency-Key` for POSTs that create something (Stripe's rules).

Same key and same body: the stored response. Same key, other body: 422. A duplicate while the first is
still running: 409. The record is completed in the same transaction as the creation when the caller
passes its session, so a crash never leaves a created object without its stored response.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
import uuid
from datetime import UTC, datetime
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pymongo import ASCENDING
from pymongo.errors import DuplicateKeyError

from libs.http import json_response
from libs.mongo import IndexSpec, Mongo
from libs.problems import Problem
from libs.refusal import Refusal

IDEMPOTENCY_INDEXES = [IndexSpec("idempotency", [("created_at", ASCENDING)], name="expire_after_1d",
                                 options={"expireAfterSeconds": 86400}),
                       IndexSpec("process_heartbeats", [("until_ms", ASCENDING)], name="until_ms")]
HEADER = "Idempotency-Key"
# A claim still "in_progress" is taken over by a retry only when the process that holds it is known dead:
# every process keeps a heartbeat (`process_heartbeats`, renewed every HEARTBEAT_S, valid HEARTBEAT_TTL_S),
# and a claim names its owner. A slow first request of a live process is never run twice; a crashed one
# never blocks the client's key for a day. Claims written before owners were recorded fall back to age.
IN_PROGRESS_STALE_S = 30
HEARTBEAT_S = 5
HEARTBEAT_TTL_S = 20
PROCESS_OWNER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


async def beat(mongo: Mongo) -> None:
    """This process is alive (see HEARTBEAT_S); called at start-up and periodically by the kit."""
    until_ms = int(time.time() * 1000) + HEARTBEAT_TTL_S * 1000
    await mongo.read_committed(lambda: mongo.db["process_heartbeats"].update_one(
        {"_id": PROCESS_OWNER}, {"$set": {"until_ms": until_ms}}, upsert=True))


async def owner_is_dead(mongo: Mongo, claim: dict, now_ms: int) -> bool:
    owner = claim.get("owner")
    if owner is None:  # an old claim: judge by its age alone
        return isinstance(claim.get("claimed_ms"), int) and now_ms - claim["claimed_ms"] > IN_PROGRESS_STALE_S * 1000
    if owner == PROCESS_OWNER:
        return False
    heartbeat = await mongo.read_committed(lambda: mongo.db["process_heartbeats"].find_one({"_id": owner}))
    return heartbeat is None or heartbeat.get("until_ms", 0) < now_ms


class IdempotencyGuard:
    def __init__(self, mongo: Mongo, request: web.Request, body: bytes) -> None:
        self.mongo = mongo
        self.key = request.headers.get(HEADER)
        principal = request.get("principal")
        owner = principal.subject if principal else "anonymous"
        self.scope = f"{owner}|{request.method}|{request.path}|{self.key}"
        self.body_hash = hashlib.sha256(body).hexdigest()
        self.active = bool(self.key)
        self.claimed_ms = 0
        if self.key is not None and not (0 < len(self.key) <= 255):
            raise Problem(400, "bad-idempotency-key", "Idempotency-Key must be 1 to 255 characters")

    async def begin(self) -> web.Response | None:
        """Claim the key. Returns the stored response to replay, or None when the caller should proceed."""
        if not self.active:
            return None
        collection = self.mongo.db["idempotency"]
        self.claimed_ms = int(time.time() * 1000)
        claim = {"_id": self.scope, "state": "in_progress", "body_hash": self.body_hash,
                 "created_at": datetime.now(UTC), "claimed_ms": self.claimed_ms, "owner": PROCESS_OWNER}
        try:
            await self.mongo.transaction(lambda s: collection.insert_one(claim, session=s))
            return None
        except DuplicateKeyError:
            pass
        existing = await self.mongo.read_committed(lambda: collection.find_one({"_id": self.scope}))
        if existing is not None and existing["state"] == "in_progress" and existing["body_hash"] == self.body_hash \
                and await owner_is_dead(self.mongo, existing, self.claimed_ms):
            taken = await self.mongo.transaction(lambda s: collection.replace_one(
                {"_id": self.scope, "state": "in_progress", "claimed_ms": existing["claimed_ms"]}, claim, session=s))
            if taken.matched_count == 1:
                return None  # the first attempt's process died; this retry carries the request on
        if existing is None:  # released in between: the caller may retry
            raise Problem(409, "idempotency-conflict", "a request with this Idempotency-Key is in progress")
        if existing["body_hash"] != self.body_hash:
            raise Problem(422, "idempotency-key-reused",
                          "this Idempotency-Key was used with a different request body")
        if existing["state"] != "completed":
            raise Problem(409, "idempotency-conflict", "a request with this Idempotency-Key is in progress")
        return json_response(existing["response"], status=existing["status"], headers={"Idempotent-Replayed": "true"})

    async def complete(self, status: int, body: Any, session=None) -> None:
        if not self.active:
            return
        update = {"$set": {"state": "completed", "status": status, "response": body}}
        mine = {"_id": self.scope, "claimed_ms": self.claimed_ms}
        if session is not None:
            await self.mongo.db["idempotency"].update_one(mine, update, session=session)
        else:
            await self.mongo.transaction(lambda s: self.mongo.db["idempotency"].update_one(mine, update, session=s))

    async def complete_in(self, session, status: int, body: Any) -> None:
        await self.complete(status, body, session=session)

    async def release(self, session=None) -> None:
        """Forget an attempt that failed, so the client may retry with the same key."""
        if not self.active:
            return
        await self.mongo.transaction(lambda s: self.mongo.db["idempotency"].delete_one(
            {"_id": self.scope, "state": "in_progress", "claimed_ms": self.claimed_ms}, session=session or s))


async def create_once(mongo: Mongo, request: web.Request,
                      create: Callable[[], Awaitable[tuple[int, Any]]], *, keep_refused_writes: bool = False
                      ) -> web.Response:
    """Answer a POST that creates something exactly once per `Idempotency-Key`.

    `create()` calls one use case and returns `(status, body)`. It runs inside one unit of work together
    with the stored answer (the use case's own `mongo.transaction` joins it), so a crash never leaves a
    created object without its stored response. A refusal stores no answer (the key may be used again) and,
    by default, undoes the unit; with `keep_refused_writes` what the use case wrote before refusing (e.g. a
    "rejected" event) commits while the key is released in the same unit.
    """
    guard = IdempotencyGuard(mongo, request, await request.read())
    replay = await guard.begin()
    if replay is not None:
        return replay

    async def unit(session) -> tuple[int, Any] | Refusal:
        try:
            status, body = await create()
        except Refusal as refusal:
            if not keep_refused_writes:
                raise
            await guard.release(session)
            return refusal
        await guard.complete(status, body, session=session)
        return status, body

    if not guard.active:
        status, body = await create()
        return json_response(body, status=status)
    try:
        outcome = await mongo.transaction(unit)
    except BaseException:
        await guard.release()
        raise
    if isinstance(outcome, Refusal):
        raise outcome
    status, body = outcome
    return json_response(body, status=status)


Remember = Callable[[Any, int, Any], Awaitable[None]]


async def saga_once(mongo: Mongo, request: web.Request,
                    run: Callable[[Remember], Awaitable[tuple[int, Any]]]) -> web.Response:
    """`Idempotency-Key` for a create whose use case spans several units of work (a saga: placing an order
    commits its intent before stock is asked, paying commits the attempt before the provider is asked).

    `create_once` would hold one transaction open across those remote calls and lose the intent on a crash.
    Here `run(remember)` calls one use case method, which stores the answer in its LAST unit of work with
    `await remember(session, status, body)`. Same rules: same key and body, the stored answer; other body,
    422; a concurrent duplicate, 409; a failure releases the key.
    """
    guard = IdempotencyGuard(mongo, request, await request.read())
    replay = await guard.begin()
    if replay is not None:
        return replay
    try:
        status, body = await run(guard.complete_in)
    except BaseException:
        await guard.release()
        raise
    return json_response(body, status=status)
