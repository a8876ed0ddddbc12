"""Calls between services when the callee runs as several replicas (a comma-separated `<SERVICE>_URL`), over
real HTTP: spread round-robin, a refused replica skipped for any method (nothing was sent), a replica that broke
off mid-request retried only for an idempotent method, and the service token fetched from any membership."""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from libs.clients import ServiceClient, ServiceTokenProvider
from libs.problems import Problem
from tests.support import free_port, running_app


@contextlib.asynccontextmanager
async def replica(name: str, seen: list[str], *, breaks: bool = False) -> AsyncIterator[str]:
    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen.append(f"{name} {request.method} {request.path}")
        if breaks:  # as a kill -9 mid-request: the connection drops, no answer
            assert request.transport is not None
            request.transport.abort()
        if request.path == "/auth/service/token":
            return web.json_response({"access_token": f"token-from-{name}", "expires_in": 300})
        return web.json_response({"by": name, "auth": request.headers.get("Authorization")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with running_app(app, free_port()) as base:
        yield base


def refusing() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as session:
        yield session


async def test_calls_spread_and_a_refusing_replica_is_skipped_for_a_post(session):
    seen: list[str] = []
    async with replica("a", seen) as a, replica("b", seen) as b:
        spread = ServiceClient("stock", f"{a},{b}", session)
        answered = [(await spread.get("/stock/levels"))["by"] for _ in range(4)]
        failover = ServiceClient("stock", f"{refusing()},{a}", session)
        posted = [(await failover.post("/stock/internal/reservations", json={}))["by"] for _ in range(3)]
    assert answered == ["a", "b", "a", "b"]
    assert posted == ["a", "a", "a"]


async def test_after_a_break_a_get_goes_to_the_next_replica_a_post_is_not_resent(session):
    seen: list[str] = []
    async with replica("broken", seen, breaks=True) as broken, replica("alive", seen) as alive:
        client = ServiceClient("stock", f"{broken},{alive}", session)
        read = await client.get("/stock/levels")
        client.replicas.mark_up(broken)  # the next call starts at the broken one again
        await client.get("/stock/levels")
        with pytest.raises(Problem) as refused:
            await client.post("/stock/internal/reservations", json={})
    assert read["by"] == "alive"
    assert refused.value.status == 503
    assert seen.count("broken POST /stock/internal/reservations") == 1
    assert "alive POST /stock/internal/reservations" not in seen


async def test_the_service_token_comes_from_any_membership_replica(session):
    seen: list[str] = []
    async with replica("membership-2", seen) as membership, replica("stock", seen) as stock:
        tokens = ServiceTokenProvider(f"{refusing()},{membership}", "orders", "secret")
        answer = await ServiceClient("stock", stock, session, tokens).get("/stock/levels")
    assert answer["auth"] == "Bearer token-from-membership-2"
