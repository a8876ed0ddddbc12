"""Webhooks cannot be pointed inside the network: outside dev mode the channel resolves a target's name itself
and connects only to the public addresses of that same answer (no DNS rebinding between check and connect),
and refuses literal inside addresses at every send. Real HTTP to a real receiver on 127.0.0.1; the only
stand-in is the DNS answer (this machine has no DNS for made-up names)."""
from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver

from services.notifications.channels.base import OutboundMessage
from services.notifications.channels.webhook import WebhookChannel, public_only_session
from tests.support import free_port, running_app


class PartnerDns(AbstractResolver):
    """The partner's name answers with an address inside our network (what a rebinding attacker arranges)."""

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        pass


@pytest.fixture
async def receiver():
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    port = free_port()
    async with running_app(app, port):
        yield port, hits


def message(address: str) -> OutboundMessage:
    return OutboundMessage(delivery_id="dlv_1", event_id="evt_1", event_type="orders.order.placed", channel="webhook",
                           address=address, subject="", body="", locale="en", attempt=1, payload=b"{}",
                           secret="s" * 32)


async def test_a_public_name_resolving_inside_is_refused_and_nothing_reaches_the_inside(receiver):
    port, hits = receiver
    target = f"http://hooks.partner.example:{port}/hook"
    # Control: the same DNS answer without the guard does reach the inside (so the guard is what stops it).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=PartnerDns())) as open_session:
        assert (await WebhookChannel(open_session, 5).send(message(target))).ok
    assert hits == ["/hook"]

    session = public_only_session(5, inner=PartnerDns())
    try:
        report = await WebhookChannel(session, 5, public_only=True).send(message(target))
    finally:
        await session.close()
    assert not report.ok and report.permanent and "no public address" in report.error
    assert hits == ["/hook"]  # nothing more arrived


@pytest.mark.parametrize("inside", ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "100.64.0.1", "169.254.169.254"])
async def test_literal_inside_addresses_are_refused_at_send_time(receiver, inside):
    port, hits = receiver
    session = public_only_session(5)
    try:
        report = await WebhookChannel(session, 5, public_only=True).send(message(f"http://{inside}:{port}/hook"))
    finally:
        await session.close()
    assert not report.ok and report.permanent and "not a public address" in report.error
    assert hits == []
