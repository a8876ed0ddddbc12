"""Helpers of the notifications integration tests: tokens minted with our own RS256 key, ids, and a handle
on the running service that drives it through its real interfaces (HTTP and the bus)."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiohttp
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.bus import Envelope
from libs.service import MONGO
from libs.testing import eventually
from services.notifications.settings import NotificationsSettings

KID = "notifications-test-key"
_PRIVATE_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks() -> dict:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(_PRIVATE_KEY.public_key()))
    return {"keys": [{**public, "kid": KID, "alg": "RS256", "use": "sig"}]}


def mint(settings: NotificationsSettings, roles: list[str], subject: str | None = None, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": subject or f"usr_{uuid.uuid4().hex[:8]}", "roles": roles, "iss": settings.jwt_issuer,
               "aud": settings.jwt_audience, "iat": now, "exp": now + 600, **claims}
    return jwt.encode(payload, _PRIVATE_KEY, algorithm="RS256", headers={"kid": KID})


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclass
class Notifications:
    """The running service and what a test needs to drive it through its real interfaces."""
    base: str
    app: web.Application
    settings: NotificationsSettings
    http: aiohttp.ClientSession
    exchange: Any
    admin_token: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    def member_token(self, member_id: str) -> str:
        return mint(self.settings, ["customer"], subject=member_id, member_id=member_id)

    async def publish(self, event_type: str, data: dict[str, Any], *, event_id: str | None = None,
                      subject: str | None = None, source: str = "test") -> Envelope:
        envelope = Envelope(id=event_id or str(uuid.uuid4()), type=event_type, source=source,
                            subject=subject or data.get("order_id") or data.get("member_id") or "x", data=data)
        await self.publish_envelope(envelope)
        return envelope

    async def publish_envelope(self, envelope: Envelope) -> None:
        message = aio_pika.Message(body=envelope.model_dump_json().encode(), content_type="application/json",
                                   message_id=envelope.id, type=envelope.type,
                                   delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await self.exchange.publish(message, routing_key=envelope.type, mandatory=True)

    async def get(self, path: str, token: str | None = None, **params: Any) -> tuple[int, Any]:
        async with self.http.get(self.base + path, headers=self.auth(token), params=params) as response:
            return response.status, await response.json(content_type=None)

    async def send(self, method: str, path: str, body: Any = None, token: str | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
        async with self.http.request(method, self.base + path, json=body,
                                     headers={**self.auth(token), **(headers or {})}) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text else None), response.content_type

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
