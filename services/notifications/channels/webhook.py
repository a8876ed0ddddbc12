"""Webhooks for other teams: the event envelope POSTed to their URL, signed (see WEBHOOKS.md)."""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from services.notifications.channels.base import OutboundMessage, SendReport
from services.notifications.domain.signing import SIGNATURE_HEADER, sign
from services.notifications.domain.targets import private_target

# Answers that a retry may fix; any other 4xx means the receiver rejects this request for good.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})


class NotPublic(OSError):
    """A webhook host that resolves only to addresses inside a network (ours, a cloud's metadata service)."""


class PublicOnlyResolver(AbstractResolver):
    """DNS answers for webhook hosts, with every address that is not globally routable dropped.

    The connection is made to the addresses this returns, so a name that resolves to a public address when
    it is registered and to 10.0.0.5 or 169.254.169.254 when a delivery is sent (DNS rebinding) cannot reach
    inside: the check and the connection use the same answer.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self.inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        answers = await self.inner.resolve(host, port, family)
        public = [a for a in answers if _is_public(a["host"])]
        if not public:
            raise NotPublic(f"{host.rstrip('.')} resolves to no public address")
        return public

    async def close(self) -> None:
        await self.inner.close()


def _is_public(host: str) -> bool:
    address = ipaddress.ip_address(host)
    address = getattr(address, "ipv4_mapped", None) or address
    return address.is_global and not address.is_multicast


def public_only_session(timeout_s: float, inner: AbstractResolver | None = None) -> aiohttp.ClientSession:
    """The HTTP session of webhooks outside dev mode: names resolved and pinned to public addresses."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                 connector=aiohttp.TCPConnector(resolver=PublicOnlyResolver(inner)))


class WebhookChannel:
    name = "webhook"

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float = 10.0, *, public_only: bool = False) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.public_only = public_only

    async def send(self, message: OutboundMessage) -> SendReport:
        if not message.secret:
            return SendReport.permanent_failure("webhook subscription no longer exists")
        if self.public_only and (reason := private_target(message.address)):
            # Literal addresses never reach the resolver: checked here, at every send, as well as at registration.
            return SendReport.permanent_failure(f"webhook target refused: {reason}")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "o2o-notifications/1",
            SIGNATURE_HEADER: sign(message.secret, message.payload, int(time.time())),
            "X-O2O-Event-Id": message.event_id,
            "X-O2O-Event-Type": message.event_type,
            "X-O2O-Delivery-Id": message.delivery_id,
            "X-O2O-Attempt": str(message.attempt),
        }
        try:
            async with self.session.post(message.address, data=message.payload, headers=headers,
                                         timeout=self.timeout, allow_redirects=False) as response:
                status = response.status
                await response.read()
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, NotPublic):
                return SendReport.permanent_failure(f"webhook target refused: {exc.os_error}")
            return SendReport.transient(f"webhook unreachable: {type(exc).__name__}: {exc}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return SendReport.transient(f"webhook unreachable: {type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return SendReport.sent(status_code=status)
        if status >= 500 or status in RETRYABLE_4XX:
            return SendReport.transient(f"receiver answered {status}", status)
        return SendReport.permanent_failure(f"receiver answered {status}", status)
