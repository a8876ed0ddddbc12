"""Stock integration fixtures: the stock app on the real broker and wire server, and RS256 tokens.

Membership (the token issuer) is another team's service; the tests mint their own RS256 tokens and load
the matching JWKS into the app's verifier, so the production verification path runs unchanged.
"""
from __future__ import annotations

import json
import uuid

import aiohttp
import pytest

from libs.auth import VERIFIER
from libs.testing import TokenMint, running_app, settings_for
from services.stock.app import create_app
from services.stock.settings import StockSettings




@pytest.fixture(scope="session")
def token_mint() -> TokenMint:
    return TokenMint()


class StockApi:
    """A running stock app plus an HTTP session and tokens for each role."""

    def __init__(self, app, base: str, http: aiohttp.ClientSession, mint: TokenMint) -> None:
        self.app, self.base, self.http = app, base, http
        self.service = {"Authorization": "Bearer " + mint.token(_settings(app), "svc:orders", ["service"])}
        self.admin = {"Authorization": "Bearer " + mint.token(_settings(app), "stf_hq", ["hq_admin"],
                                                             staff_id="stf_hq")}
        self.mint = mint

    @property
    def settings(self):
        return _settings(self.app)

    @property
    def db(self):
        from libs.service import MONGO
        return self.app[MONGO].db

    def staff_of(self, *store_ids: str, role: str = "store_staff") -> dict:
        token = self.mint.token(_settings(self.app), f"stf_{store_ids[0]}", [role], staff_id=f"stf_{store_ids[0]}",
                                store_ids=list(store_ids))
        return {"Authorization": "Bearer " + token}

    async def call(self, method: str, path: str, headers: dict | None = None, **kw) -> tuple[int, dict, dict]:
        async with self.http.request(method, self.base + path, headers=headers or {}, **kw) as response:
            body = await response.json(content_type=None) if (await response.read()) else None
            return response.status, body, dict(response.headers)

    async def reserve(self, body: dict, headers: dict | None = None) -> tuple[int, dict]:
        status, payload, _ = await self.call("POST", "/stock/internal/reservations",
                                               self.service if headers is None else headers, json=body)
        return status, payload

    async def move(self, body: dict, headers: dict | None = None) -> tuple[int, dict]:
        status, payload, _ = await self.call("POST", "/stock/movements",
                                               self.admin if headers is None else headers, json=body)
        return status, payload

    async def location(self, **fields) -> dict:
        body = {"kind": "store", "ownership": "direct", "capabilities": {"pickup": True, "ship": True},
                "daily_capacity": 100, "safety_stock": 0, **fields}
        status, payload, _ = await self.call("POST", "/stock/locations", self.admin, json=body)
        assert status == 201, payload
        return payload

    async def stock_up(self, location_id: str, sku_id: str, qty: int) -> None:
        status, payload = await self.move({"kind": "receive", "key": f"seed:{location_id}:{sku_id}:{uuid.uuid4().hex}",
                                           "location_id": location_id, "sku_id": sku_id, "qty": qty})
        assert status == 201, payload

    async def level(self, location_id: str, sku_id: str) -> dict:
        status, payload, _ = await self.call("GET", f"/stock/levels?location_id={location_id}&sku_id={sku_id}",
                                             self.admin)
        assert status == 200, payload
        return payload["items"][0]


def _settings(app):
    from libs.http import SETTINGS
    return app[SETTINGS]


@pytest.fixture
async def stock_api(mongo_url, bus_namespace, token_mint, request):
    """A fresh stock database per test (its own prefix), the session's bus namespace."""
    overrides = getattr(request, "param", {}) or {}
    settings = settings_for(StockSettings, mongo_url, bus_namespace,
                            mongo_db_prefix=f"st{uuid.uuid4().hex[:10]}_", **overrides)
    app = create_app(settings)
    app[VERIFIER].load_jwks(token_mint.jwks)
    async with running_app(app, settings.port) as base:
        # No connection cap: concurrency tests really put hundreds of requests in flight at once.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            yield StockApi(app, base, http, token_mint)


class EventTap:
    """A private queue bound to the run's exchange: what stock really published on the broker."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.events: list[dict] = []

    async def start(self, *keys: str) -> None:
        import aio_pika
        from libs.bus import Names
        from libs.testing import AMQP_URL
        self.connection = await aio_pika.connect(AMQP_URL)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(Names(self.namespace).exchange, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        queue = await channel.declare_queue(f"{self.namespace}tap.{uuid.uuid4().hex[:8]}", exclusive=True,
                                            auto_delete=True)
        for key in keys:
            await queue.bind(exchange, routing_key=key)

        async def collect(message):
            async with message.process():
                self.events.append(json.loads(message.body))

        await queue.consume(collect)

    def of(self, event_type: str, **data) -> list[dict]:
        return [e for e in self.events if e["type"] == event_type
                and all(e["data"].get(k) == v for k, v in data.items())]

    async def stop(self) -> None:
        await self.connection.close()


@pytest.fixture
async def event_tap(bus_namespace):
    tap = EventTap(bus_namespace)
    yield tap
    await tap.stop()


async def publish_raw(namespace: str, envelope: dict) -> None:
    """Publish an envelope as another service would (used for consumer and redelivery tests)."""
    import aio_pika
    from libs.bus import Names
    from libs.testing import AMQP_URL
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(Names(namespace).exchange, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        await exchange.publish(aio_pika.Message(json.dumps(envelope).encode(), message_id=envelope["id"],
                                                content_type="application/json"), routing_key=envelope["type"])
    finally:
        await connection.close()


@pytest.fixture
def publish(bus_namespace):
    return lambda envelope: publish_raw(bus_namespace, envelope)
