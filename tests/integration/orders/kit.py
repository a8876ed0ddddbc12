"""Test kit for orders: the real orders and stock apps (and catalog / membership when their contract
endpoints exist in the tree) on the real broker and wire server, each on its own port over real HTTP.

Membership is the token issuer. Where the real membership app is not available, a stand-in speaks its
contract (service tokens, JWKS, checkout holds, attribution) with a test signing key; likewise a catalog
stand-in answers the quote contract from the shared demo dataset. Every service verifies tokens through
its production path (JWKS fetched over HTTP).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.testing import free_port, running_app, settings_for

DATASET = json.loads((Path(__file__).resolve().parents[3] / "deploy/demo/dataset.json").read_text())
SKUS = {sku["id"]: {**sku, "product": product} for product in DATASET["products"] for sku in product["skus"]}
ISSUER, AUDIENCE = "o2o-membership", "o2o-api"


class TokenMint:
    def __init__(self) -> None:
        self.kid = f"test-{uuid.uuid4().hex[:8]}"
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        self.jwks = {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def token(self, sub: str, roles: list[str], ttl_s: int = 3600, **claims) -> str:
        now = int(time.time())
        payload = {"sub": sub, "roles": roles, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl_s,
                   **claims}
        return jwt.encode(payload, self.private_key, algorithm="RS256", headers={"kid": self.kid})

    def member(self, member_id: str) -> dict:
        return {"Authorization": "Bearer " + self.token(member_id, ["customer"], member_id=member_id)}

    def staff(self, store_id: str, role: str = "store_staff", staff_id: str | None = None) -> dict:
        staff_id = staff_id or f"stf_{store_id}_{role}"
        return {"Authorization": "Bearer " + self.token(staff_id, [role], staff_id=staff_id, store_ids=[store_id])}

    def admin(self) -> dict:
        return {"Authorization": "Bearer " + self.token("stf_hq_admin", ["hq_admin"], staff_id="stf_hq_admin")}


# -- stand-ins for contracts whose real implementation is not in the tree yet -----------------------

class MembershipStandIn:
    """Speaks membership's contracts from libs/README.md: service token, JWKS, checkout holds, attribution."""

    COUPONS = {"WELCOME20": {"kind": "amount_off", "threshold": 19900, "amount_off": 2000}}

    def __init__(self, mint: TokenMint) -> None:
        self.mint = mint
        self.points = {m["id"]: m["points"] for m in DATASET["members"]}
        self.holds: dict[str, dict] = {}
        self.coupon_owner: dict[str, str] = {}  # code -> order holding or having redeemed it
        self.calls: list[tuple[str, str]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/auth/service/token", self.service_token)
        app.router.add_get("/auth/jwks", self.jwks)
        app.router.add_post("/members/internal/checkout-holds", self.hold)
        app.router.add_post("/members/internal/checkout-holds/{order_id}/{action}", self.hold_action)
        app.router.add_get("/members/internal/members/{member_id}/attribution", self.attribution)
        return app

    async def service_token(self, request: web.Request) -> web.Response:
        body = await request.json()
        token = self.mint.token(f"svc:{body['client_id']}", ["service"], ttl_s=600)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 600})

    async def jwks(self, _: web.Request) -> web.Response:
        return web.json_response(self.mint.jwks)

    @staticmethod
    def problem(status: int, type_: str, detail: str) -> web.Response:
        return web.Response(status=status, content_type="application/problem+json", body=json.dumps(
            {"type": f"https://o2o.example/problems/{type_}", "title": type_, "status": status, "detail": detail}))

    async def hold(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(("hold", body["order_id"]))
        if body["order_id"] in self.holds:
            return web.json_response(self.holds[body["order_id"]]["answer"], status=201)
        subtotal = sum(line["qty"] * line["unit_price"] for line in body["lines"])
        coupon_discount, coupons = 0, []
        for code in body["coupon_codes"]:
            rule = self.COUPONS.get(code)
            if rule is None or code in self.coupon_owner or subtotal < rule["threshold"]:
                return self.problem(409, "coupon-unavailable", f"coupon {code} cannot be used")
            coupon_discount += rule["amount_off"]
            coupons.append({"code": code, "discount": rule["amount_off"]})
        if body["points"] > self.points.get(body["member_id"], 0):
            return self.problem(409, "insufficient-points", "not enough points")
        points_discount = min(body["points"], subtotal - coupon_discount)  # 1 point = 1 fen off
        for code in body["coupon_codes"]:
            self.coupon_owner[code] = body["order_id"]
        self.points[body["member_id"]] -= points_discount
        answer = {"order_id": body["order_id"], "coupon_discount": coupon_discount, "points_discount": points_discount,
                  "points_used": points_discount, "coupons": coupons}
        self.holds[body["order_id"]] = {"answer": answer, "state": "held", "member_id": body["member_id"],
                                        "codes": list(body["coupon_codes"])}
        return web.json_response(answer, status=201)

    async def hold_action(self, request: web.Request) -> web.Response:
        order_id, action = request.match_info["order_id"], request.match_info["action"]
        self.calls.append((action, order_id))
        hold = self.holds.get(order_id)
        if hold is None:
            return self.problem(404, "not-found", "no hold")
        if action == "release" and hold["state"] == "held":
            hold["state"] = "released"
            self.points[hold["member_id"]] += hold["answer"]["points_used"]
            for code in hold["codes"]:
                self.coupon_owner.pop(code, None)
        elif action == "commit" and hold["state"] == "held":
            hold["state"] = "committed"
        return web.json_response({"order_id": order_id, "state": hold["state"]})

    async def attribution(self, request: web.Request) -> web.Response:
        member_id = request.match_info["member_id"]
        member = next((m for m in DATASET["members"] if m["id"] == member_id), None)
        if member is None:
            return web.json_response({"member_id": member_id, "store_id": None, "staff_id": None,
                                      "campaign_id": None, "bound_until": None})
        return web.json_response({"member_id": member_id, "store_id": member.get("bound_store_id"),
                                  "staff_id": member.get("bound_staff_id"), "campaign_id": None, "bound_until": None})


def catalog_stand_in() -> web.Application:
    """Catalog's quote contract, answered from the demo dataset (channel price in force, else base)."""
    async def quote(request: web.Request) -> web.Response:
        body = await request.json()
        unknown = [s for s in body["sku_ids"] if s not in SKUS]
        if unknown:
            return MembershipStandIn.problem(422, "sku-not-sellable", f"not sellable: {unknown}")
        items = []
        for sku_id in body["sku_ids"]:
            sku = SKUS[sku_id]
            price = sku["price"]
            items.append({"sku_id": sku_id, "product_id": sku["product"]["id"], "name": sku["product"]["name"],
                          "category": sku["product"]["category"], "status": sku["product"]["status"],
                          "barcode": sku["barcode"], "unit_price": price.get("channels", {}).get(body["channel"], price["base"]),
                          "base_price": price["base"], "cost_price": sku.get("cost_price", 0)})
        return web.json_response({"items": items})

    app = web.Application()
    app.router.add_post("/catalog/internal/quote", quote)
    return app


def real_app_factory(service: str, marker: tuple[str, str] | None = None):
    """The sibling's create_app when its contract endpoint exists in the tree, else None."""
    try:
        module = importlib.import_module(f"services.{service}.app")
        handlers = importlib.import_module(f"services.{service}.handlers")
    except ImportError:
        return None
    if marker is not None:
        source = Path(handlers.__file__).read_text()
        if marker[1] not in source:
            return None
    return module.create_app


async def answers_quotes(catalog_url: str, mint: TokenMint) -> bool:
    """The sibling in the tree may be work in progress: use it only when it answers its contract."""
    token = mint.token("svc:orders", ["service"])
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(catalog_url + "/catalog/internal/quote", headers={"Authorization": f"Bearer {token}"},
                                 json={"channel": "app", "sku_ids": ["sku_tee_classic_whi_s"]}) as response:
                body = await response.json(content_type=None)
                return response.status == 200 and body["items"][0]["unit_price"] == 9500
    except Exception:
        return False


class Harness:
    def __init__(self, http: aiohttp.ClientSession, mint: TokenMint, urls: dict[str, str], apps: dict,
                 membership: MembershipStandIn) -> None:
        self.http, self.mint, self.urls, self.apps, self.membership = http, mint, urls, apps, membership

    @property
    def orders_url(self) -> str:
        return self.urls["orders"]

    async def call(self, method: str, path: str, headers: dict | None = None, service: str = "orders",
                   **kw) -> tuple[int, dict | None, dict]:
        async with self.http.request(method, self.urls[service] + path, headers=headers or {}, **kw) as response:
            raw = await response.read()
            body = json.loads(raw) if raw else None
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
    """Stock (real, demo data), catalog and membership (real when ready, else stand-ins) and orders."""
    from services.orders.app import create_app as create_orders
    from services.orders.settings import OrdersSettings
    from services.stock.app import create_app as create_stock
    from services.stock.settings import StockSettings

    mint = TokenMint()
    membership = MembershipStandIn(mint)
    prefix = f"or{uuid.uuid4().hex[:8]}_"
    async with contextlib.AsyncExitStack() as stack:
        membership_url = await stack.enter_async_context(running_app(membership.app(), free_port()))
        jwks_url = membership_url + "/auth/jwks"
        common = dict(mongo_db_prefix=prefix, jwks_url=jwks_url, membership_url=membership_url)
        catalog_url = None
        create_catalog = real_app_factory("catalog", ("quote", "/catalog/internal/quote"))
        if create_catalog is not None:
            from services.catalog.settings import CatalogSettings
            catalog_settings = settings_for(CatalogSettings, mongo_url, namespace, demo_data=True, **common)
            real = running_app(create_catalog(catalog_settings), catalog_settings.port)
            candidate = await stack.enter_async_context(real)
            if await answers_quotes(candidate, mint):
                catalog_url = candidate
        if catalog_url is None:
            catalog_url = await stack.enter_async_context(running_app(catalog_stand_in(), free_port()))
        stock_settings = settings_for(StockSettings, mongo_url, namespace, demo_data=True, **common,
                                      **(stock_overrides or {}))
        stock_app = create_stock(stock_settings)
        stock_url = await stack.enter_async_context(running_app(stock_app, stock_settings.port))
        orders_settings = settings_for(OrdersSettings, mongo_url, namespace, catalog_url=catalog_url,
                                       stock_url=stock_url, sweep_interval_s=0.5, **common,
                                       **(orders_overrides or {}))
        orders_app = create_orders(orders_settings)
        orders_url = await stack.enter_async_context(running_app(orders_app, orders_settings.port))
        http = await stack.enter_async_context(aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)))
        yield Harness(http, mint, {"orders": orders_url, "stock": stock_url, "catalog": catalog_url,
                                   "membership": membership_url},
                      {"orders": orders_app, "stock": stock_app}, membership)


class EventTap:
    """A private queue on the run's exchange, bound to `pattern`, collecting envelopes (as dicts)."""

    def __init__(self, namespace: str, pattern: str = "orders.#") -> None:
        self.namespace, self.pattern = namespace, pattern
        self.events: list[dict] = []

    async def __aenter__(self) -> EventTap:
        import aio_pika
        from libs.testing import AMQP_URL
        self.connection = await aio_pika.connect(AMQP_URL)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(f"{self.namespace}o2o.events", aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        self.queue = await channel.declare_queue(f"{self.namespace}tap.{uuid.uuid4().hex[:8]}", exclusive=True,
                                                 auto_delete=True)
        await self.queue.bind(exchange, routing_key=self.pattern)

        async def collect(message):
            async with message.process():
                self.events.append(json.loads(message.body))

        await self.queue.consume(collect)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.connection.close()

    def of(self, event_type: str, order_id: str | None = None) -> list[dict]:
        return [e for e in self.events if e["type"] == event_type and (order_id is None or e["subject"] == order_id)]
