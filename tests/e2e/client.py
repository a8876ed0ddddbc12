"""A client app's view of the suite: everything goes through the gateway's public API."""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.support import EventTap, eventually

_ip_counter = itertools.count(1)


def fresh_client_ip() -> str:
    """Each simulated phone gets its own address (the e2e gateway trusts X-Forwarded-For like behind an LB)."""
    n = next(_ip_counter)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    def __getitem__(self, key):
        return self.body[key]


class Api:
    """One device. `base` is the API root of one gateway, or a list of them (gateway replicas): then calls take
    turns over them, and a call that finds its gateway refusing connections goes to the next, as a client
    behind DNS round robin or a load balancer would."""

    def __init__(self, http: aiohttp.ClientSession, base: str | list[str], token: str | None = None,
                 client_ip: str | None = None) -> None:
        self.http = http
        self.bases = [base] if isinstance(base, str) else list(base)
        self._turn = itertools.count()
        self.token = token
        self.client_ip = client_ip or fresh_client_ip()

    def as_(self, token: str | None) -> Api:
        return Api(self.http, self.bases, token, self.client_ip)

    async def call(self, method: str, path: str, body: Any = None, *, idempotency_key: str | None = None,
                   headers: dict[str, str] | None = None) -> Reply:
        sent = {"X-Forwarded-For": self.client_ip}
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        if method == "POST":
            sent["Idempotency-Key"] = idempotency_key or uuid.uuid4().hex
        if headers:
            sent.update(headers)
        turn = next(self._turn)
        for attempt in range(len(self.bases)):
            base = self.bases[(turn + attempt) % len(self.bases)]
            try:
                async with self.http.request(method, base + path, json=body, headers=sent) as response:
                    raw = await response.read()
                    try:
                        parsed = json.loads(raw) if raw else None
                    except ValueError:
                        parsed = raw.decode(errors="replace")
                    return Reply(response.status, parsed, dict(response.headers))
            except aiohttp.ClientConnectorError:  # nothing was sent: the next gateway
                if attempt == len(self.bases) - 1:
                    raise
        raise AssertionError("unreachable")

    async def get(self, path: str, **kw) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw) -> Reply:
        return await self.call("POST", path, {} if body is None else body, **kw)

    async def ok(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201, 202)) -> Any:
        reply = await self.call(method, path, body)
        assert reply.status in expect, f"{method} {path} -> {reply.status}: {reply.body}"
        return reply.body

    # -- logins ------------------------------------------------------------------------------------
    async def member_login(self, phone: str) -> Api:
        """Log in on a new device (its own address): OTP, then token."""
        device = Api(self.http, self.bases)
        otp = await device.ok("POST", "/auth/member/otp", {"phone": phone})
        token = await device.ok("POST", "/auth/member/token", {"phone": phone, "code": otp["dev_code"]})
        return device.as_(token["access_token"])

    async def staff_login(self, username: str, password: str) -> Api:
        device = Api(self.http, self.bases)
        token = await device.ok("POST", "/auth/staff/token", {"username": username, "password": password})
        return device.as_(token["access_token"])


def new_phone() -> str:
    return "+86139" + str(uuid.uuid4().int)[:8]


async def wait_for_status(api: Api, order_id: str, status: str, timeout: float = 60.0) -> dict:
    async def reached():
        reply = await api.get(f"/orders/{order_id}")
        return reply.body if reply.status == 200 and reply.body["status"] == status else None
    return await eventually(reached, timeout=timeout)


async def pickup_code_from_notifications(member: Api, order_id: str) -> str:
    """The code reaches the member as a message (delivery log); staff never see it."""
    async def code():
        reply = await member.get("/notifications/deliveries?type=orders.order.ready_for_pickup")
        if reply.status != 200:
            return None
        for delivery in reply.body["items"]:
            if order_id in (delivery.get("body") or ""):
                match = re.search(r"\b(\d{6})\b", delivery["body"])
                if match:
                    return match.group(1)
        return None
    return await eventually(code, timeout=60)


async def level(admin: Api, location_id: str, sku_id: str) -> dict:
    reply = await admin.get(f"/stock/levels?location_id={location_id}&sku_id={sku_id}")
    assert reply.status == 200, reply.body
    items = reply.body["items"]
    return items[0] if items else {"on_hand": 0, "reserved": 0, "available": 0}


class BusTap(EventTap):
    """Every event on the run's exchange, looked up by type and subject (the aggregate id)."""

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace, "#")

    def of(self, event_type: str, subject: str | None = None) -> list[dict]:  # type: ignore[override]
        return [e for e in self.events if e["type"] == event_type and (subject is None or e["subject"] == subject)]

    async def wait_for(self, event_type: str, subject: str | None = None,  # type: ignore[override]
                       timeout: float = 60.0) -> dict:
        found = await eventually(lambda: self.of(event_type, subject), timeout=timeout)
        return found[0]


async def gather_limited(coros, limit: int = 200):
    semaphore = asyncio.Semaphore(limit)

    async def run(coro):
        async with semaphore:
            return await coro

    return await asyncio.gather(*(run(c) for c in coros))
