"""Webhooks for other teams: the event envelope POSTed to their URL, signed (see WEBHOOKS.md)."""
from __future__ import annotations

import asyncio
import time

import aiohttp

from services.notifications.channels.base import OutboundMessage, SendReport
from services.notifications.domain.signing import SIGNATURE_HEADER, sign

# Answers that a retry may fix; any other 4xx means the receiver rejects this request for good.
RETRYABLE_4XX = frozenset({408, 409, 425, 429})


class WebhookChannel:
    name = "webhook"

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float = 10.0) -> None:
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, message: OutboundMessage) -> SendReport:
        if not message.secret:
            return SendReport.permanent_failure("webhook subscription no longer exists")
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
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            return SendReport.transient(f"webhook unreachable: {type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return SendReport.sent(status_code=status)
        if status >= 500 or status in RETRYABLE_4XX:
            return SendReport.transient(f"receiver answered {status}", status)
        return SendReport.permanent_failure(f"receiver answered {status}", status)
