"""The settlement service in-process on the real broker and the real wire server, fed raw order events."""
from __future__ import annotations

import contextlib
import time
import uuid
from datetime import UTC, datetime

import aio_pika
import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.auth import VERIFIER
from libs.bus import Envelope, Names
from libs.testing import AMQP_URL, eventually, running_app, settings_for
from services.settlement.app import create_app
from services.settlement.settings import SettlementSettings


class TokenMinter:
    """Signs RS256 tokens the way membership does, with a key the test owns."""

    def __init__(self, issuer: str, audience: str) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"test-{uuid.uuid4().hex[:8]}"
        self.issuer, self.audience = issuer, audience

    def jwks(self) -> dict:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def token(self, subject: str, roles: list[str], **claims) -> str:
        now = int(time.time())
        payload = {"sub": subject, "roles": roles, "iss": self.issuer, "aud": self.audience, "iat": now,
                   "exp": now + 600, **claims}
        return jwt.encode(payload, self.key, algorithm="RS256", headers={"kid": self.kid})


class Settlement:
    def __init__(self, base_url: str, app, http: aiohttp.ClientSession, channel, exchange, minter: TokenMinter) -> None:
        self.url, self.app, self.http, self.minter = base_url, app, http, minter
        self.channel, self.exchange = channel, exchange
        self.admin = {"Authorization": f"Bearer {minter.token('stf_hq_admin', ['hq_admin'], staff_id='stf_hq_admin')}"}

    def headers_for(self, subject: str, roles: list[str], **claims) -> dict:
        return {"Authorization": f"Bearer {self.minter.token(subject, roles, **claims)}"}

    def franchisee(self, franchisee_id: str, store_ids: list[str]) -> dict:
        return self.headers_for(f"stf_{franchisee_id}", ["franchisee"], franchisee_id=franchisee_id,
                                store_ids=store_ids)

    async def publish(self, event_type: str, data: dict, occurred_at: datetime | None = None,
                      event_id: str | None = None) -> Envelope:
        """A raw envelope into the namespaced exchange, as orders' outbox relay would publish it."""
        envelope = Envelope(id=event_id or str(uuid.uuid4()), type=event_type, source="orders",
                            subject=data.get("order_id", "x"), occurred_at=occurred_at or datetime.now(UTC),
                            data=data)
        await self.exchange.publish(aio_pika.Message(body=envelope.model_dump_json().encode(),
                                                     content_type="application/json", message_id=envelope.id,
                                                     delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                    routing_key=event_type, mandatory=True)
        return envelope

    async def listen(self, routing_key: str):
        """An exclusive queue bound to the namespaced exchange: what the service publishes."""
        queue = await self.channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self.exchange, routing_key=routing_key)
        return queue

    async def get(self, path: str, headers: dict | None = None, **params):
        async with self.http.get(self.url + path, headers=headers if headers is not None else self.admin,
                                 params=params) as response:
            body = await response.text()
            if response.content_type.endswith("json"):
                import json
                return response.status, json.loads(body)
            return response.status, body

    async def post(self, path: str, json=None, headers: dict | None = None, data=None, params=None):
        async with self.http.post(self.url + path, json=json, data=data, params=params,
                                  headers=headers if headers is not None else self.admin) as response:
            return response.status, await response.json(content_type=None)

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
    app = create_app(settings)
    minter = TokenMinter(settings.jwt_issuer, settings.jwt_audience)
    async with running_app(app, settings.port) as base_url:
        app[VERIFIER].load_jwks(minter.jwks())
        connection = await aio_pika.connect(AMQP_URL)
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(Names(namespace).exchange, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        try:
            async with aiohttp.ClientSession() as http:
                yield Settlement(base_url, app, http, channel, exchange, minter)
        finally:
            names = Names(namespace)
            for queue in (names.queue("settlement"), names.retry_queue("settlement"), names.dlq("settlement"),
                          names.audit):
                await channel.queue_delete(queue)
            for exchange_name in (names.exchange, names.dlx):
                await channel.exchange_delete(exchange_name)
            await connection.close()


@pytest.fixture
async def settlement(mongo_url, bus_namespace):
    async with settlement_service(mongo_url, bus_namespace) as service:
        yield service
