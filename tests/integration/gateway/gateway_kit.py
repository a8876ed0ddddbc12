"""Test kit for the gateway: a signing key with its JWKS served over HTTP, tokens of every kind, a gateway
started in-process, and small recording upstreams for behaviours no real service can be made to show on cue
(hanging, failing, counting attempts)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.support import TokenMint, free_port, running_app
from services.gateway.app import STATE, create_app
from services.gateway.settings import GatewaySettings

from tests.support.tokens import AUDIENCE, ISSUER  # noqa: F401  (the gateway tests name them)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def jwks_server(*keys: TokenMint, published: list[TokenMint] | None = None) -> AsyncIterator[str]:
    """Membership's JWKS endpoint, served by a tiny app; yields the JWKS URL. Pass a list as `published` to
    change the keys while it runs (rotation)."""
    keys = published if published is not None else list(keys)
    app = web.Application()

    async def jwks(_: web.Request) -> web.Response:
        return web.json_response({"keys": [key.jwk() for key in keys]})

    app.router.add_get("/auth/jwks", jwks)
    port = free_port()
    async with running_app(app, port) as base:
        yield f"{base}/auth/jwks"


DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens there
# Tests send every request from 127.0.0.1 and tell the gateway other addresses in X-Forwarded-For.
LOCAL_PROXY = ["127.0.0.1/32"]
# Gateway overrides for tests whose subject is not the login and pickup budgets (one test logs in as
# the same few people many times from one address).
ROOMY_LOGIN_LIMITS = {f"rate_{name}_{part}": value for name in ("login_ip", "login_target", "login_pair",
                                                                  "otp_send", "pickup_order", "pickup_store")
                      for part, value in (("burst", 100_000), ("per_s", 10_000.0))}


def gateway_settings(jwks_url: str, **overrides) -> GatewaySettings:
    values = dict(port=free_port(), metrics_port=free_port(), jwks_url=jwks_url, catalog_url=DOWN, stock_url=DOWN, orders_url=DOWN,
                  membership_url=DOWN, notifications_url=DOWN, settlement_url=DOWN, upstream_timeout_s=5.0,
                  upstream_connect_timeout_s=1.0, revocation_poll_s=0,  # a fake membership has no revocations
                  dev_mode=True)  # its client secret is then the one the test services (dev mode too) expect
    values.update(overrides)
    return GatewaySettings(**values)


class ManualClock:
    """The rate limiter's clock, moved by the test: "50 logins within a minute" is 50 logins with the clock
    advanced 1.2 s between them, however slow the machine is (no assertion depends on real time)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def gateway_app(settings: GatewaySettings, limiter_clock: ManualClock | None = None) -> web.Application:
    app = create_app(settings)
    if limiter_clock is not None:
        app[STATE].limiter.clock = limiter_clock
    return app


class GatewayBase(str):
    """The gateway's public base URL; `.internal` is its internal listener (/metrics, detailed /healthz)."""

    internal: str

    @classmethod
    def of(cls, base: str, settings: GatewaySettings) -> GatewayBase:
        url = cls(base)
        url.internal = f"http://127.0.0.1:{settings.metrics_port}"
        return url


@contextlib.asynccontextmanager
async def running_gateway(jwks_url: str, limiter_clock: ManualClock | None = None,
                          **overrides) -> AsyncIterator[GatewayBase]:
    settings = gateway_settings(jwks_url, **overrides)
    async with running_app(gateway_app(settings, limiter_clock), settings.port) as base:
        yield GatewayBase.of(base, settings)


@dataclass
class Recorder:
    """What a fake upstream saw."""
    requests: list[dict] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r["method"] == method and r["path"] == path)


@contextlib.asynccontextmanager
async def recording_upstream(answers: dict[tuple[str, str], tuple[int, dict]] | None = None,
                             hang_paths: frozenset[str] = frozenset(),
                             block_header: str | None = None) -> AsyncIterator[tuple[str, Recorder]]:
    """An upstream that records every request. It answers `answers[(method, path)]` (default 200 echo),
    never answers `hang_paths` until the test ends, and holds requests carrying `block_header` until
    `recorder.release` is set."""
    recorder = Recorder()
    answers = answers or {}

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        recorder.requests.append({"method": request.method, "path": request.path, "query": dict(request.query),
                                  "headers": dict(request.headers), "body": body})
        if request.path in hang_paths:
            await recorder.closing.wait()
        if block_header and block_header in request.headers:
            await recorder.release.wait()
        status, payload = answers.get((request.method, request.path), (200, {"echo": request.path}))
        content_type = "application/problem+json" if status >= 400 else "application/json"
        return web.Response(status=status, body=json.dumps(payload).encode(), content_type=content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    port = free_port()
    async with running_app(app, port) as base:
        try:
            yield base, recorder
        finally:
            recorder.closing.set()  # let hanging handlers end, so the server shuts down at once


async def call(session: aiohttp.ClientSession, method: str, url: str, **kw) -> tuple[int, dict, aiohttp.typedefs.CIMultiDictProxy]:
    """One request; the JSON body (or {} when there is none) and headers."""
    async with session.request(method, url, **kw) as response:
        raw = await response.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_raw": raw.decode(errors="replace")}
        return response.status, body, response.headers


# --- the whole suite behind the gateway (for BOLA and schemathesis) ---------------------------------------

SUITE_SERVICES = ("membership", "catalog", "stock", "orders", "settlement", "notifications")


def suite_marks(needed: tuple[str, ...]) -> list:
    """`pytestmark` of a module that runs real services behind the gateway: the module's loop, and a skip naming
    the service packages not in the tree yet."""
    import pytest
    missing = missing_services(needed)
    return [pytest.mark.asyncio(loop_scope="module"),
            pytest.mark.skipif(bool(missing), reason=f"service packages not in the tree yet: {missing}")]


def missing_services(needed: tuple[str, ...] = SUITE_SERVICES) -> list[str]:
    """Services whose package cannot be imported yet (the tests that need them skip, saying which)."""
    import importlib
    missing = []
    for name in needed:
        try:
            importlib.import_module(f"services.{name}.app")
            importlib.import_module(f"services.{name}.settings")
        except ImportError:
            missing.append(name)
    return missing


@dataclass
class Suite:
    gateway: GatewayBase
    urls: dict[str, str]

    @property
    def api(self) -> str:
        return self.gateway + "/api/v1"


@contextlib.asynccontextmanager
async def suite_behind_gateway(mongo_url: str, namespace: str, needed: tuple[str, ...] = SUITE_SERVICES,
                               publish_openapi: bool = False, limiter_clock: ManualClock | None = None,
                               service_overrides: dict[str, dict] | None = None,
                               **gateway_overrides) -> AsyncIterator[Suite]:
    """The real services (demo data, dev mode) started in-process, each on its own port, with membership as the
    token issuer everyone verifies against, and the gateway in front of them.

    `publish_openapi`: a service that does not serve GET /openapi.json yet gets one generated from its routes by
    libs.openapi (what its owner's one-line adoption will do), so the aggregated spec covers every route.
    `service_overrides`: settings per service, e.g. {"membership": {"password_memory_kib": 65536}}."""
    import importlib

    from tests.support import settings_for
    prefix = f"gw{uuid.uuid4().hex[:8]}_"
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in needed}
    membership_url = urls.get("membership", DOWN)
    common = dict(mongo_db_prefix=prefix, jwks_url=membership_url + "/auth/jwks", membership_url=membership_url,
                  demo_data=True)
    gateway_overrides = {f"{n}_url": u for n, u in urls.items()} | {
        "revocation_poll_s": 0.2 if "membership" in urls else 0} | gateway_overrides
    extra = {"orders": dict(catalog_url=urls.get("catalog", DOWN), stock_url=urls.get("stock", DOWN)),
             "membership": dict(password_time_cost=1, password_memory_kib=8192)}
    for name, values in (service_overrides or {}).items():
        extra[name] = {**extra.get(name, {}), **values}
    async with contextlib.AsyncExitStack() as stack:
        for name in needed:  # membership first: the others fetch its JWKS and service tokens
            settings_module = importlib.import_module(f"services.{name}.settings")
            settings_cls = next(getattr(settings_module, attr) for attr in dir(settings_module)
                                if attr.lower() == f"{name}settings")
            app_module = importlib.import_module(f"services.{name}.app")
            port = int(urls[name].rsplit(":", 1)[1])
            settings = settings_for(settings_cls, mongo_url, namespace, port=port, **common, **extra.get(name, {}))
            app = app_module.create_app(settings)
            if publish_openapi and not any(r.resource is not None and r.resource.canonical == "/openapi.json"
                                           for r in app.router.routes()):
                from libs.openapi import add_openapi_route
                add_openapi_route(app, name.title())
            await stack.enter_async_context(running_app(app, port))
        gateway_settings_ = gateway_settings(common["jwks_url"], **gateway_overrides)
        gateway = GatewayBase.of(await stack.enter_async_context(
            running_app(gateway_app(gateway_settings_, limiter_clock), gateway_settings_.port)), gateway_settings_)
        yield Suite(gateway=gateway, urls=urls)
