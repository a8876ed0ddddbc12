"""Test kit for orders: the real orders, stock, catalog and membership apps (demo data) on the real broker
and wire server, each on its own port, talking over real HTTP with membership's service tokens.

Member and staff tokens are minted by the tests (`tests.support.TokenMint`) with their own key, published
next to membership's keys by a JWKS endpoint every service is pointed at, so verification runs its
production path (JWKS over HTTP) and a test can be any member, including thousands of flash-sale buyers.
"""
from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from services.orders.schemas import CounterOrderView, OrderPage, PickupCodeView, ReturnAnswer, ReturnCodeOut
from tests.support import TokenMint, free_port, running_app, settings_for


def jwks_union(membership_url: str, mint: TokenMint) -> web.Application:
    """Membership's JWKS (fetched live) plus the test's signing key: services verify membership's real service
    tokens and the tests' member / staff tokens through their production path (JWKS over HTTP)."""
    async def jwks(_: web.Request) -> web.Response:
        async with aiohttp.ClientSession() as http:
            async with http.get(membership_url + "/auth/jwks") as response:
                keys = (await response.json())["keys"] if response.status == 200 else []
        return web.json_response({"keys": [*keys, *mint.jwks["keys"]]})

    app = web.Application()
    app.router.add_get("/auth/jwks", jwks)
    return app


def as_published(path: str, status: int, payload):
    """A successful answer of orders is exactly what its OpenAPI document describes (the gateway's docs and
    its fuzzing trust those models)."""
    if 200 <= status < 300 and isinstance(payload, dict) and path.startswith("/orders") \
            and not path.startswith("/orders/internal/"):  # internal routes are not in the public document
        model = (OrderPage if "items" in payload else ReturnAnswer if "return" in payload else
                 ReturnCodeOut if "return_code" in payload else
                 CounterOrderView if "fulfilment_type" in payload else PickupCodeView)
        model.model_validate(payload)
    return payload


class Harness:
    def __init__(self, http: aiohttp.ClientSession, mint: TokenMint, urls: dict[str, str], apps: dict) -> None:
        self.http, self.mint, self.urls, self.apps = http, mint, urls, apps

    @property
    def orders_url(self) -> str:
        return self.urls["orders"]

    async def call(self, method: str, path: str, headers: dict | None = None, service: str = "orders",
                   **kw) -> tuple[int, dict | None, dict]:
        async with self.http.request(method, self.urls[service] + path, headers=headers or {}, **kw) as response:
            raw = await response.read()
            body = json.loads(raw) if raw else None
            if service == "orders":
                as_published(path, response.status, body)
            return response.status, body, dict(response.headers)

    async def place(self, body: dict, headers: dict, key: str | None = None) -> tuple[int, dict]:
        extra = {"Idempotency-Key": key} if key else {}
        status, payload, _ = await self.call("POST", "/orders", {**headers, **extra}, json=body)
        return status, payload

    async def pay(self, order_id: str, headers: dict, card: str = "4242424242424242") -> tuple[int, dict]:
        status, payload, _ = await self.call("POST", f"/orders/{order_id}/pay", headers, json={"card_number": card})
        return status, payload

    async def get(self, order_id: str, headers: dict) -> tuple[int, dict]:
        status, payload, _ = await self.call("GET", f"/orders/{order_id}", headers)
        return status, payload

    async def level(self, location_id: str, sku_id: str) -> dict:
        status, payload, _ = await self.call("GET", f"/stock/levels?location_id={location_id}&sku_id={sku_id}",
                                             self.mint.admin(), service="stock")
        assert status == 200, payload
        return payload["items"][0]

    async def reservation(self, order_id: str) -> dict | None:
        status, payload, _ = await self.call("GET", f"/stock/internal/reservations/{order_id}", self.mint.admin(),
                                             service="stock")
        return payload if status == 200 else None

    async def stock_move(self, body: dict) -> tuple[int, dict]:
        status, payload, _ = await self.call("POST", "/stock/movements", self.mint.admin(), service="stock", json=body)
        return status, payload


@contextlib.asynccontextmanager
async def orders_suite(mongo_url: str, namespace: str, *, orders_overrides: dict | None = None,
                       stock_overrides: dict | None = None) -> AsyncIterator[Harness]:
    """Membership, catalog and stock (the real apps, demo data) and orders, each on its own port."""
    from services.catalog.app import create_app as create_catalog
    from services.catalog.settings import CatalogSettings
    from services.membership.app import create_app as create_membership
    from services.membership.settings import MembershipSettings
    from services.orders.app import create_app as create_orders
    from services.orders.settings import OrdersSettings
    from services.stock.app import create_app as create_stock
    from services.stock.settings import StockSettings

    mint = TokenMint()
    prefix = f"or{uuid.uuid4().hex[:8]}_"
    membership_port, jwks_port = free_port(), free_port()
    membership_url = f"http://127.0.0.1:{membership_port}"
    common = dict(mongo_db_prefix=prefix, jwks_url=f"http://127.0.0.1:{jwks_port}/auth/jwks",
                  membership_url=membership_url, demo_data=True)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_app(jwks_union(membership_url, mint), jwks_port))
        membership_settings = settings_for(MembershipSettings, mongo_url, namespace, port=membership_port,
                                           password_time_cost=1, password_memory_kib=8192, **common)
        membership_app = create_membership(membership_settings)
        await stack.enter_async_context(running_app(membership_app, membership_port))
        catalog_settings = settings_for(CatalogSettings, mongo_url, namespace, **common)
        catalog_app = create_catalog(catalog_settings)
        catalog_url = await stack.enter_async_context(running_app(catalog_app, catalog_settings.port))
        stock_settings = settings_for(StockSettings, mongo_url, namespace, **common, **(stock_overrides or {}))
        stock_app = create_stock(stock_settings)
        stock_url = await stack.enter_async_context(running_app(stock_app, stock_settings.port))
        orders_settings = settings_for(OrdersSettings, mongo_url, namespace, catalog_url=catalog_url,
                                       stock_url=stock_url, **common,
                                       **{"sweep_interval_s": 0.5, **(orders_overrides or {})})
        orders_app = create_orders(orders_settings)
        orders_url = await stack.enter_async_context(running_app(orders_app, orders_settings.port))
        http = await stack.enter_async_context(aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=300)))
        yield Harness(http, mint, {"orders": orders_url, "stock": stock_url, "catalog": catalog_url,
                                   "membership": membership_url},
                      {"orders": orders_app, "stock": stock_app, "membership": membership_app,
                       "catalog": catalog_app})
