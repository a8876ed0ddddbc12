"""The delivery log as people see it: listing and reading deliveries, a manual retry, what the sandbox kept."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from libs.clock import now_ms, utcnow
from libs.mongo import Mongo
from libs.pagination import decode_cursor, page_of
from libs.principal import Principal
from libs.refusal import FORBIDDEN
from services.notifications.domain.access import visible_recipients
from services.notifications.domain.errors import NotificationError, missing
from services.notifications.repository import DeliveryRepository, OutboundLog

DELIVERIES_SCOPE = "notifications.deliveries"


class DeliveryLog:
    def __init__(self, mongo: Mongo) -> None:
        self.mongo, self.deliveries, self.outbound_log = mongo, DeliveryRepository(mongo), OutboundLog(mongo)

    async def page(self, principal: Principal, filters: dict[str, Any], recipient: str | None, limit: int,
                   cursor: str | None) -> tuple[dict, dict[str, list[dict]]]:
        """One page of the deliveries the caller may see (newest first) and the attempts of each."""
        after = decode_cursor(cursor, DELIVERIES_SCOPE)
        visible = visible_recipients(principal)
        query = dict(filters)
        if recipient:
            if visible is not None and recipient not in visible:
                return {"items": [], "next_cursor": None}, {}
            query["recipient_id"] = recipient
        elif visible is not None:
            if not visible:
                raise NotificationError("forbidden", "this role has no deliveries to see", kind=FORBIDDEN)
            query["recipient_id"] = {"$in": sorted(visible)}
        docs = await self.deliveries.page(query, after, limit + 1)
        page = page_of(docs, limit, scope=DELIVERIES_SCOPE)
        return page, await self.deliveries.attempts_of([d["_id"] for d in page["items"]])

    async def get(self, principal: Principal, delivery_id: str) -> tuple[dict, list[dict]]:
        doc = await self.mongo.read_committed(lambda: self.deliveries.get(delivery_id))
        visible = visible_recipients(principal)
        if doc is None or (visible is not None and doc["recipient_id"] not in visible):
            raise missing("delivery")
        return doc, await self._attempts(doc)

    async def retry(self, delivery_id: str) -> tuple[dict, list[dict]]:
        """Send a failed delivery again (e.g. after a receiver was fixed), with a fresh retry budget."""

        async def unit(session):
            doc = await self.deliveries.get(delivery_id, session)
            if doc is None:
                raise missing("delivery")
            if doc["status"] != "failed":
                raise NotificationError("not-failed", f"only a failed delivery can be retried; this one is "
                                                      f"{doc['status']}")
            if doc.get("reason", "").startswith("template-error"):
                raise NotificationError("not-retryable", "the template failed to render; fix the template, the "
                                                         "message was never composed")
            return await self.deliveries.save({**doc, "status": "pending", "due_at_ms": now_ms(),
                                               "reason": "manual-retry", "budget_start": doc["attempt_count"],
                                               "updated_at": utcnow()}, session)

        saved = await self.mongo.transaction(unit)
        return saved, await self._attempts(saved)

    async def _attempts(self, doc: dict) -> list[dict]:
        return (await self.deliveries.attempts_of([doc["_id"]])).get(doc["_id"], [])

    async def outbound(self, filters: dict[str, Any], limit: int) -> list[dict]:
        """What the sandbox channels (sms, wechat, push) and the local sink would have sent (dev and demo)."""
        return await self.outbound_log.page(filters, limit)


DELIVERY_LOG = web.AppKey("notifications_delivery_log", DeliveryLog)
