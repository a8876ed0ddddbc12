"""Webhook subscriptions: partners receive the events they chose, signed with a secret shown once."""
from __future__ import annotations

import secrets

from aiohttp import web

from libs.clock import utcnow
from libs.ids import new_id
from libs.mongo import Mongo
from libs.refusal import INVALID
from services.notifications.domain.errors import NotificationError, missing
from services.notifications.domain.targets import private_target
from services.notifications.repository import WebhookRepository
from services.notifications.settings import NotificationsSettings


class Webhooks:
    def __init__(self, mongo: Mongo, settings: NotificationsSettings) -> None:
        self.mongo, self.settings, self.webhooks = mongo, settings, WebhookRepository(mongo)

    async def subscribe(self, url: str, event_types: list[str], secret: str | None, description: str,
                        by: str) -> dict:
        if not self.settings.webhooks_may_target_private:
            reason = private_target(url)
            if reason:
                raise NotificationError("webhook-target-not-allowed",
                                        f"webhooks go to public receivers only: {reason}", kind=INVALID)
        doc = {"_id": new_id("whk"), "url": url, "event_types": event_types,
               "secret": secret or "whsec_" + secrets.token_urlsafe(32), "active": True,
               "description": description, "created_by": by, "created_at": utcnow()}
        return await self.mongo.transaction(lambda s: self.webhooks.add(doc, s))

    async def list(self) -> list[dict]:
        return await self.webhooks.list()

    async def unsubscribe(self, webhook_id: str) -> None:
        """Deactivate a subscription (kept for the delivery log); asking twice changes nothing."""

        async def unit(session):
            doc = await self.webhooks.get(webhook_id, session)
            if doc is None:
                raise missing("webhook")
            if doc["active"]:
                await self.webhooks.save({**doc, "active": False, "deactivated_at": utcnow()}, session)

        await self.mongo.transaction(unit)


WEBHOOKS = web.AppKey("notifications_webhooks", Webhooks)
