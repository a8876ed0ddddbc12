"""Membership started in-process on the real broker and the nx wire server, one database per test."""
from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from libs.bus import Envelope
from services.membership.app import create_app
from services.membership.settings import MembershipSettings
from services.membership.usecases import MEMBERS, Members
from tests.support import ApiClient, TokenMint, publish_raw, serve, settings_for

bearer = TokenMint.bearer


@dataclass
class Membership:
    """The running service: its HTTP API, its use cases (`membership[POINTS]`) and its settings."""

    app: web.Application
    api: ApiClient
    settings: MembershipSettings

    def __getitem__(self, key):
        return self.app[key]

    @property
    def repos(self) -> Members:
        """A use case, for its repositories and unit of work: tests look at what was stored."""
        return self.app[MEMBERS]

    async def service_token(self, client_id: str = "orders") -> str:
        """A token of `client_id` for calling membership, through the real client-credentials exchange."""
        status, body = await self.api.post("/auth/service/token", {
            "client_id": client_id, "client_secret": self.settings.client_secrets()[client_id],
            "audience": "membership"})
        assert status == 200, body
        return body["access_token"]

    async def staff_token(self, username: str, password: str) -> str:
        status, body = await self.api.post("/auth/staff/token", {"username": username, "password": password})
        assert status == 200, body
        return body["access_token"]

    async def member_login(self, phone: str) -> tuple[str, str]:
        status, body = await self.api.post("/auth/member/otp", {"phone": phone})
        assert status == 202, body
        status, body = await self.api.post("/auth/member/token", {"phone": phone, "code": body["dev_code"]})
        assert status == 200, body
        token = body["access_token"]
        status, me = await self.api.get("/members/me", headers=bearer(token))
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


async def publish(namespace: str, event_type: str, data: dict, envelope_id: str | None = None) -> dict:
    """Publish an event of orders on the run's exchange, as orders would; returns the envelope sent."""
    envelope = Envelope(type=event_type, source="orders", subject=data.get("order_id", "x"), data=data,
                        **({"id": envelope_id} if envelope_id else {})).model_dump(mode="json")
    await publish_raw(namespace, envelope)
    return envelope


@pytest.fixture
async def start_membership(mongo_url, bus_namespace):
    """Factory: start membership (optionally with the demo data and setting overrides)."""
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())

        async def start(demo: bool = False, settings: MembershipSettings | None = None, **overrides) -> Membership:
            settings = settings or make_settings(mongo_url, bus_namespace, demo_data=demo, **overrides)
            app, base = await stack.enter_async_context(serve(create_app, settings))
            return Membership(app, ApiClient(http, base), settings)

        yield start


@pytest.fixture
async def membership(start_membership) -> Membership:
    return await start_membership(demo=True)
