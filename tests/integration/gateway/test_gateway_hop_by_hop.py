"""A client cannot make the gateway drop a header it has judged: `Connection: Authorization` once made the gateway
authenticate the token and then strip it as hop-by-hop, so the service saw an anonymous caller. Only the fixed
hop-by-hop set is dropped now, and a second Authorization header beside the judged one is refused."""
from __future__ import annotations

import asyncio

import pytest

from tests.integration.gateway.gateway_kit import recording_upstream, running_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def raw_request(base: str, lines: list[str]) -> tuple[int, bytes]:
    """One HTTP/1.1 request written by hand (a client library may rewrite `Connection`)."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    return status, answer


async def test_connection_header_cannot_strip_the_judged_token(signing_key, jwks_url):
    token = signing_key.token(sub="mbr_a")
    async with recording_upstream() as (orders_url, seen), \
            running_gateway(jwks_url, orders_url=orders_url) as gateway:
        status, answer = await raw_request(gateway, [
            "GET /api/v1/orders/ord_1 HTTP/1.1", "Host: gateway", f"Authorization: Bearer {token}",
            "Connection: close, Authorization, X-Request-ID", "X-Request-ID: req-hop-1"])
    assert status == 200, answer
    (forwarded,) = seen.requests
    assert forwarded["headers"]["Authorization"] == f"Bearer {token}"
    assert forwarded["headers"]["X-Request-ID"] == "req-hop-1"


async def test_a_second_authorization_header_is_refused(signing_key, jwks_url):
    token = signing_key.token(sub="mbr_a")
    other = signing_key.token(sub="mbr_b")
    async with recording_upstream() as (orders_url, seen), \
            running_gateway(jwks_url, orders_url=orders_url) as gateway:
        status, answer = await raw_request(gateway, [
            "GET /api/v1/orders/ord_1 HTTP/1.1", "Host: gateway", "Connection: close",
            f"Authorization: Bearer {token}", f"Authorization: Bearer {other}"])
    assert status == 400, answer
    assert b"invalid-token" in answer
    assert seen.requests == []
