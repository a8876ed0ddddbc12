"""Stock integration fixtures: the stock app on the real broker and wire server, served by `tests.support`.

Membership (the token issuer) is another team's service; the tests mint their own RS256 tokens and the app's
verifier trusts the minter's JWKS, so the production verification path runs unchanged.
"""
from __future__ import annotations

import uuid

import aiohttp
import pytest

from libs.http import SETTINGS
from libs.service import MONGO
from services.stock.app import create_app
from services.stock.settings import StockSettings
from tests.support import ApiClient, EventTap, TokenMint, publish_raw, serve, settings_for


@pytest.fixture(scope="session")
def token_mint() -> TokenMint:
    return TokenMint()


class StockApi:
    """The running stock app, one client, and the calls the stock tests make again and again."""

    def __init__(self, app, client: ApiClient, mint: TokenMint) -> None:
        self.app, self.client, self.mint = app, client, mint
        self.http, self.base = client.http, client.base
        self.service = mint.service("orders", "stock")
        self.admin = mint.admin("stf_hq")

    @property
    def settings(self) -> StockSettings:
        return self.app[SETTINGS]

    @property
    def db(self):
        return self.app[MONGO].db

    def staff_of(self, *store_ids: str, role: str = "store_staff") -> dict:
        return self.mint.staff(*store_ids, role=role, staff_id=f"stf_{store_ids[0]}")

    async def call(self, method: str, path: str, headers: dict | None = None, **kw) -> tuple[int, dict, dict]:
        """`(status, body, headers)` of one call (`json=` or raw `data=` as aiohttp takes them)."""
        reply = await self.client.call(method, path, kw.pop("json", None), headers=headers or {}, **kw)
        return reply.status, reply.body, reply.headers

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


@pytest.fixture
async def stock_api(mongo_url, bus_namespace, token_mint, request):
    """A fresh stock database per test (its own prefix), the session's bus namespace."""
    overrides = getattr(request, "param", {}) or {}
    settings = settings_for(StockSettings, mongo_url, bus_namespace,
                            mongo_db_prefix=f"st{uuid.uuid4().hex[:10]}_", **overrides)
    async with serve(create_app, settings, token_mint.jwks) as (app, base):
        # No connection cap: concurrency tests really put hundreds of requests in flight at once.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            yield StockApi(app, ApiClient(http, base), token_mint)


@pytest.fixture
async def event_tap(bus_namespace):
    tap = EventTap(bus_namespace)
    yield tap
    await tap.stop()


@pytest.fixture
def publish(bus_namespace):
    return lambda envelope: publish_raw(bus_namespace, envelope)
