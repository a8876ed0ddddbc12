"""`Idempotency-Key` for the two orders creates that span several units of work: placing an order (the
intent is committed before stock is asked, so a crash can be compensated) and paying it (the attempt is
committed before the provider is asked, so a charge is never taken twice).

`libs.idempotency.create_once` runs the whole creation inside ONE unit of work, which would keep a
transaction open across the calls to stock, membership and the payment provider and lose the intent on a
crash. Here the answer is stored instead by the use case's last unit of work (`remember(session, status,
body)`), with the same rules: same key and body, the stored answer; other body, 422; concurrent, 409.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from libs.http import json_response
from libs.idempotency import IdempotencyGuard
from libs.mongo import Mongo

Remember = Callable[[Any, int, Any], Awaitable[None]]


async def saga_once(mongo: Mongo, request: web.Request,
                    run: Callable[[Remember], Awaitable[tuple[int, Any]]]) -> web.Response:
    """Answer a multi-step create exactly once per key; `run(remember)` calls one use case method."""
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
