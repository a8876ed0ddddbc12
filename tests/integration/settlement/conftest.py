"""The settlement service in-process on the real broker and the real wire server, fed raw order events."""
from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime

import aio_pika
import aiohttp
import pytest

from libs.bus import Envelope, Names
from services.settlement.app import create_app
from services.settlement.settings import SettlementSettings
from tests.support import AMQP_URL, ApiClient, EventTap, TokenMint, delete_bus_namespace, eventually, \
    publish_raw, serve, settings_for


class Settlement:
    """The service under test as the tests talk to it: HQ by default, other callers by their headers."""

    def __init__(self, base_url: str, app, http: aiohttp.ClientSession, namespace: str, mint: TokenMint) -> None:
        self.url, self.app, self.http, self.mint, self.namespace = base_url, app, http, mint, namespace
        self.admin = mint.admin()
        self.api = ApiClient(http, base_url, self.admin)
        self.bare = ApiClient(http, base_url)  # for callers that bring their own headers (or none)
        self.taps: list[EventTap] = []

    def headers_for(self, subject: str, roles: list[str], **claims) -> dict:
        return TokenMint.bearer(self.mint.token(subject, roles, **claims))

    def franchisee(self, franchisee_id: str, store_ids: list[str]) -> dict:
        return self.headers_for(f"stf_{franchisee_id}", ["franchisee"], franchisee_id=franchisee_id,
                                store_ids=store_ids)

    async def publish(self, event_type: str, data: dict, occurred_at: datetime | None = None,
                      event_id: str | None = None) -> Envelope:
        """A raw envelope into the namespaced exchange, as orders' outbox relay would publish it."""
        envelope = Envelope(id=event_id or str(uuid.uuid4()), type=event_type, source="orders",
                            subject=data.get("order_id", "x"), occurred_at=occurred_at or datetime.now(UTC),
                            data=data)
        await publish_raw(self.namespace, envelope.model_dump(mode="json"))
        return envelope

    async def listen(self, *routing_keys: str) -> EventTap:
        """What the service publishes from now on (stopped when the service stops)."""
        tap = await EventTap(self.namespace, *routing_keys).start()
        self.taps.append(tap)
        return tap

    def _client(self, headers: dict | None) -> ApiClient:
        """HQ by default; explicit headers replace HQ's (an empty dict means no token at all)."""
        return self.api if headers is None else self.bare.with_headers(headers)

    async def get(self, path: str, headers: dict | None = None, **params):
        return await self._client(headers).get(path, params=params)

    async def text(self, path: str, headers: dict | None = None, **params) -> tuple[int, str]:
        """A non-JSON answer (CSV export, metrics)."""
        async with self.http.get(self.url + path, headers=self.admin if headers is None else headers,
                                 params=params) as response:
            return response.status, await response.text()

    async def post(self, path: str, json=None, headers: dict | None = None, data=None, params=None):
        return await self._client(headers).post(path, json, data=data, params=params)

    async def dead_lettered(self, message_id: str):
        """The message with this id once it reached settlement's dead-letter queue (others are acked away)."""
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            dlq = await channel.declare_queue(Names(self.namespace).dlq("settlement"), passive=True)
            message = await dlq.get(no_ack=False, fail=False)
            while message is not None:
                await message.ack()
                if message.message_id == message_id:
                    return message
                message = await dlq.get(no_ack=False, fail=False)
            return None
        finally:
            await connection.close()

    async def postings(self, order_id: str) -> list[dict]:
        status, body = await self.get(f"/settlement/orders/{order_id}/postings")
        assert status == 200, body
        return body["items"]

    async def posting_kinds(self, order_id: str) -> list[str]:
        return sorted(posting["kind"] for posting in await self.postings(order_id))

    async def wait_for_postings(self, order_id: str, kinds: list[str]) -> list[dict]:
        async def check():
            postings = await self.postings(order_id)
            return postings if sorted(p["kind"] for p in postings) == sorted(kinds) else None
        return await eventually(check)

    async def account_balance(self, account: str) -> int:
        status, body = await self.get("/settlement/accounts")
        assert status == 200, body
        return next((item["balance"] for item in body["items"] if item["id"] == account), 0)


@contextlib.asynccontextmanager
async def settlement_service(mongo_url: str, bus_namespace: str, **overrides):
    """The service with its own database and its own queues (a message committed but not yet acked when a
    test's app stops is redelivered to nobody else), deleted afterwards."""
    run = uuid.uuid4().hex[:8]
    namespace = f"{bus_namespace}stl{run}."
    settings = settings_for(SettlementSettings, mongo_url, namespace, demo_data=True,
                            mongo_db_prefix=f"o2o_stl{run}_", **{"auto_close_enabled": False, **overrides})
    mint = TokenMint(issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    try:
        async with serve(create_app, settings, mint.jwks) as (app, base_url):
            async with aiohttp.ClientSession() as http:
                service = Settlement(base_url, app, http, namespace, mint)
                try:
                    yield service
                finally:
                    for tap in service.taps:
                        await tap.stop()
    finally:
        await delete_bus_namespace(namespace)


@pytest.fixture
async def settlement(mongo_url, bus_namespace):
    async with settlement_service(mongo_url, bus_namespace) as service:
        yield service
