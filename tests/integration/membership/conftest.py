"""Membership started in-process on the real broker and the nx wire server, one database per test."""
from __future__ import annotations

import asyncio
import sys
import uuid
from dataclasses import dataclass

import aio_pika
import aiohttp
import pytest

from libs.bus import Bus, Envelope, Names
from libs.testing import AMQP_URL, running_app, settings_for
from services.membership.app import create_app
from services.membership.handlers import MEMBERSHIP
from services.membership.settings import MembershipSettings


@dataclass
class Running:
    url: str
    app: object
    http: aiohttp.ClientSession
    settings: MembershipSettings

    @property
    def svc(self):
        return self.app[MEMBERSHIP]

    async def post(self, path: str, json=None, token: str | None = None, headers: dict | None = None):
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        async with self.http.post(self.url + path, json=json, headers=sent) as response:
            return response.status, await response.json(content_type=None)

    async def get(self, path: str, token: str | None = None, params: dict | None = None):
        sent = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.http.get(self.url + path, headers=sent, params=params) as response:
            return response.status, await response.json(content_type=None)

    async def service_token(self) -> str:
        status, body = await self.post("/auth/service/token", {"client_id": "orders",
                                                               "client_secret": self.settings.service_client_secret})
        assert status == 200, body
        return body["access_token"]

    async def staff_token(self, username: str, password: str) -> str:
        status, body = await self.post("/auth/staff/token", {"username": username, "password": password})
        assert status == 200, body
        return body["access_token"]

    async def member_login(self, phone: str) -> tuple[str, str]:
        status, body = await self.post("/auth/member/otp", {"phone": phone})
        assert status == 202, body
        status, body = await self.post("/auth/member/token", {"phone": phone, "code": body["dev_code"]})
        assert status == 200, body
        token = body["access_token"]
        status, me = await self.get("/members/me", token)
        assert status == 200, me
        return token, me["id"]


def unique_phone() -> str:
    return "+86139" + f"{uuid.uuid4().int % 10 ** 8:08d}"


def make_settings(mongo_url: str, bus_namespace: str, **overrides) -> MembershipSettings:
    prefix = f"o2o_t{uuid.uuid4().hex[:8]}_"
    settings = settings_for(MembershipSettings, mongo_url, bus_namespace, mongo_db_prefix=prefix,
                            rsa_key_bits=2048, password_time_cost=1, password_memory_kib=8192, **overrides)
    # Only a fallback: the service verifies its own tokens from its key ring in memory.
    return settings.model_copy(update={"jwks_url": f"http://127.0.0.1:{settings.port}/auth/jwks"})


class EventTap:
    """A private queue bound to the run's exchange: what membership really published on the broker."""

    def __init__(self, namespace: str, keys: list[str]) -> None:
        self.namespace = namespace
        self.keys = keys
        self.received: list[Envelope] = []

    async def __aenter__(self):
        self.connection = await aio_pika.connect(AMQP_URL)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(Names(self.namespace).exchange, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self.keys:
            await queue.bind(exchange, routing_key=key)

        async def take(message):
            async with message.process():
                self.received.append(Envelope.model_validate_json(message.body))

        await queue.consume(take)
        return self

    async def __aexit__(self, *exc):
        await self.connection.close()

    def of(self, event_type: str, **data) -> list[Envelope]:
        return [e for e in self.received if e.type == event_type
                and all(e.data.get(k) == v for k, v in data.items())]


async def publish(namespace: str, event_type: str, data: dict, envelope_id: str | None = None) -> Envelope:
    """Publish an event on the run's exchange as another service would (confirmed)."""
    envelope = Envelope(type=event_type, source="orders", subject=data.get("order_id", "x"), data=data,
                        **({"id": envelope_id} if envelope_id else {}))
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(Names(namespace).exchange, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        await exchange.publish(Bus.message_for(envelope), routing_key=event_type)
    finally:
        await connection.close()
    return envelope


@pytest.fixture
async def start_membership(mongo_url, bus_namespace):
    """Factory: start membership (optionally with the demo data and setting overrides)."""
    stack = []

    async def start(demo: bool = False, settings: MembershipSettings | None = None, **overrides) -> Running:
        settings = settings or make_settings(mongo_url, bus_namespace, demo_data=demo, **overrides)
        app = create_app(settings)
        context = running_app(app, settings.port)
        try:
            url = await asyncio.wait_for(context.__aenter__(), timeout=45)
        except TimeoutError:
            dump_tasks("membership start-up did not finish within 45 s")
            raise
        http = aiohttp.ClientSession()
        stack.append((context, http))
        return Running(url, app, http, settings)

    yield start
    for context, http in reversed(stack):
        await http.close()
        try:
            await asyncio.wait_for(context.__aexit__(None, None, None), timeout=30)
        except TimeoutError:
            dump_tasks("membership shutdown did not finish within 30 s")
            raise


def dump_tasks(reason: str) -> None:
    """Print every pending task's stack: what a hung shutdown is waiting for."""
    print(f"==== {reason}; pending tasks:")
    for task in asyncio.all_tasks():
        print(f"---- {task.get_name()}: {task.get_coro()}")
        task.print_stack(limit=15, file=sys.stdout)


@pytest.fixture
async def membership(start_membership) -> Running:
    return await start_membership(demo=True)
