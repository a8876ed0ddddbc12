"""Helpers of the notifications integration tests: ids, and a handle on the running service that drives it
through its real interfaces (HTTP and the bus), on top of the suite's test support."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from libs.bus import Envelope
from libs.service import MONGO
from services.notifications.domain.rules import SECRET_CODES
from services.notifications.settings import NotificationsSettings
from tests.support import ApiClient, TokenMint, eventually, publish_raw

TOKENS = TokenMint()
ADMIN = "stf_hq"


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def mint_token(sub: str, roles: list[str], **claims: Any) -> str:
    return TOKENS.token(sub, roles, **claims)


@dataclass
class CodeOwner:
    """What the stand-in for orders and membership holds: (owner, order id or phone) -> code, and its calls."""
    url: str
    codes: dict[tuple[str, str], str] = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)


@dataclass
class Notifications:
    """The running service and what a test needs to drive it through its real interfaces."""
    base: str
    app: web.Application
    settings: NotificationsSettings
    http: aiohttp.ClientSession
    namespace: str
    code_owner: CodeOwner | None = None

    @property
    def api(self) -> ApiClient:
        return ApiClient(self.http, self.base, TOKENS.admin(ADMIN))

    def auth(self, bearer: str | None = None) -> dict[str, str]:
        return TOKENS.bearer(bearer) if bearer else TOKENS.admin(ADMIN)

    def member_token(self, member_id: str) -> str:
        return mint_token(member_id, ["customer"], member_id=member_id)

    async def publish(self, event_type: str, data: dict[str, Any], *, event_id: str | None = None,
                      subject: str | None = None, source: str = "test") -> Envelope:
        if event_type in SECRET_CODES and self.code_owner is not None:
            # As the real producers do: the code stays with its owner, the event only names what it belongs to.
            variable, owner, key_field = SECRET_CODES[event_type]
            data = dict(data)
            code = data.pop(variable, None)
            key = data.get(key_field) or (data.get("contact") or {}).get(key_field)
            if code is not None and key:
                self.code_owner.codes[(owner, key)] = code
        return await self.publish_raw_event(event_type, data, event_id=event_id, subject=subject, source=source)

    async def publish_raw_event(self, event_type: str, data: dict[str, Any], *, event_id: str | None = None,
                                subject: str | None = None, source: str = "test") -> Envelope:
        """Publish the data as given (an older producer that still sent codes, say)."""
        envelope = Envelope(id=event_id or str(uuid.uuid4()), type=event_type, source=source,
                            subject=subject or data.get("order_id") or data.get("member_id") or "x", data=data)
        await self.publish_envelope(envelope)
        return envelope

    async def publish_envelope(self, envelope: Envelope) -> None:
        await publish_raw(self.namespace, json.loads(envelope.model_dump_json()))

    async def get(self, path: str, token: str | None = None, **params: Any) -> tuple[int, Any]:
        reply = await self.api.get(path, headers=self.auth(token), params=params)
        return reply.status, reply.body

    async def send(self, method: str, path: str, body: Any = None, token: str | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
        reply = await self.api.call(method, path, body, headers={**self.auth(token), **(headers or {})})
        return reply.status, reply.body, reply.headers.get("Content-Type", "").split(";")[0]

    async def deliveries(self, **filters: Any) -> list[dict]:
        status, body = await self.get("/notifications/deliveries", **filters)
        assert status == 200, body
        return body["items"]

    async def outbound(self, **filters: Any) -> list[dict]:
        status, body = await self.get("/notifications/outbound", **filters)
        assert status == 200, body
        return body["items"]

    async def register_member(self, member_id: str, **contact: Any) -> None:
        """Feed the recipient directory the way membership does, and wait until it is consumed."""
        envelope = await self.publish("membership.member.registered", {"member_id": member_id, **contact})
        await self.wait_handled(envelope.id)

    async def wait_handled(self, event_id: str) -> None:
        mongo = self.app[MONGO]
        await eventually(lambda: mongo.read_committed(lambda: mongo.db["inbox"].find_one({"_id": event_id})),
                         timeout=20)
