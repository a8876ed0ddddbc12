"""Notifications running in-process on the real broker and a real MongoDB wire server, with real receivers:
an aiohttp webhook receiver on a free port, an aiosmtpd SMTP server, and tokens from the suite's test minter.
"""
from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from services.notifications.app import create_app
from services.notifications.settings import NotificationsSettings
from tests.integration.notifications.notifications_kit import TOKENS, Notifications
from tests.support import EventTap, free_port, running_app, serve, settings_for


@pytest.fixture
async def start_notifications(mongo_url, bus_namespace):
    """Start a notifications instance with its own database; yields a factory taking settings overrides."""
    http = aiohttp.ClientSession()
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Notifications:
            values = dict(mongo_db_prefix=f"o2o_n{uuid.uuid4().hex[:8]}_", delivery_poll_interval_s=0.05,
                          retry_base_delay_ms=40, retry_max_delay_ms=200, max_attempts=4, sink_mirror=False,
                          campaign_poll_interval_s=0.1, membership_url="http://127.0.0.1:9", send_timeout_s=5.0)
            values.update(overrides)
            settings = settings_for(NotificationsSettings, mongo_url, bus_namespace, **values)
            app, base = await stack.enter_async_context(serve(create_app, settings, TOKENS.jwks))
            return Notifications(base, app, settings, http, bus_namespace)

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
