"""Notifications running in-process on the real broker and a real MongoDB wire server, with real receivers:
an aiohttp webhook receiver on a free port, an aiosmtpd SMTP server, and tokens from the suite's test minter.
"""
from __future__ import annotations

import contextlib
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from services.notifications.app import create_app
from services.notifications.settings import NotificationsSettings
from tests.integration.notifications.notifications_kit import TOKENS, CodeOwner, Notifications
from tests.support import EventTap, free_port, running_app, serve, settings_for


@pytest.fixture
async def code_owner():
    """A real HTTP server standing in for the owners of one-time codes (orders' pickup codes, membership's login
    codes) and for membership's token endpoint: it hands out the codes the test put in it, and keeps every
    call with its bearer token."""
    owner = CodeOwner(url="")

    async def token(request: web.Request) -> web.Response:
        body = await request.json()
        owner.calls.append({"path": request.path, "client_id": body.get("client_id"), "audience": body.get("audience")})
        return web.json_response({"access_token": f"svc-token-{body.get('audience')}", "token_type": "Bearer",
                                  "expires_in": 600})

    def answer(kind: str, field_name: str):
        async def handler(request: web.Request) -> web.Response:
            key = request.match_info["key"]
            owner.calls.append({"path": request.path, "authorization": request.headers.get("Authorization")})
            code = owner.codes.get((kind, key))
            if code is None:
                return web.json_response({"type": "https://o2o.example/problems/no-pending-code", "status": 409},
                                         status=409, content_type="application/problem+json")
            return web.json_response({field_name: code})
        return handler

    app = web.Application()
    app.router.add_post("/auth/service/token", token)
    app.router.add_get("/orders/internal/orders/{key}/pickup-code", answer("orders", "pickup_code"))
    app.router.add_get("/members/internal/otp-codes/{key}", answer("membership", "code"))
    async with running_app(app, free_port()) as base:
        owner.url = base
        yield owner


@pytest.fixture
async def start_notifications(mongo_url, bus_namespace, code_owner):
    """Start a notifications instance with its own database; yields a factory taking settings overrides."""
    http = aiohttp.ClientSession()
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Notifications:
            values = dict(mongo_db_prefix=f"o2o_n{uuid.uuid4().hex[:8]}_", delivery_poll_interval_s=0.05,
                          retry_base_delay_ms=40, retry_max_delay_ms=200, max_attempts=4, sink_mirror=False,
                          campaign_poll_interval_s=0.1, membership_url=code_owner.url, orders_url=code_owner.url,
                          send_timeout_s=5.0)
            values.update(overrides)
            if values.get("dev_mode") is False:  # production refuses to start without its own credential
                values.setdefault("client_secret", secrets.token_hex(32))
            settings = settings_for(NotificationsSettings, mongo_url, bus_namespace, **values)
            app, base = await stack.enter_async_context(serve(create_app, settings, TOKENS.jwks))
            return Notifications(base, app, settings, http, bus_namespace, code_owner)

        try:
            yield start
        finally:
            await http.close()  # first, so that no client connection keeps a server waiting at shutdown


@pytest.fixture
async def notifications(start_notifications) -> Notifications:
    return await start_notifications()


@dataclass
class WebhookReceiver:
    """A real HTTP receiver that answers with scripted statuses (then 200) and keeps every request."""
    url: str
    script: list[int] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)


@pytest.fixture
async def webhook_receiver():
    receiver = WebhookReceiver(url="")

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        status = receiver.script.pop(0) if receiver.script else 200
        receiver.requests.append({"headers": dict(request.headers), "body": body, "path": request.path,
                                  "status": status})
        return web.json_response({"ok": status < 300}, status=status)

    app = web.Application()
    app.router.add_post("/{tail:.*}", hook)
    port = free_port()
    async with running_app(app, port) as base:
        receiver.url = base + "/hooks/o2o"
        yield receiver


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd hook
        if address.startswith("nobody@"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "raw": envelope.content})
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, mailbox
    controller.stop()


@pytest.fixture
async def failure_events(bus_namespace):
    """Every `notifications.delivery.failed` event published during the test, as the broker carried it."""
    async with EventTap(bus_namespace, "notifications.delivery.failed") as tap:
        yield tap.events
