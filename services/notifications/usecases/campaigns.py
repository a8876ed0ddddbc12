"""Campaigns: a marketing message to every member with a tag, fetched page by page from membership and paced
so that a large audience does not burst out at once."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from libs.clients import ServiceClient, UpstreamError
from libs.clock import now_ms, rfc3339, utcnow
from libs.ids import new_id
from libs.logging import get_logger
from libs.mongo import Mongo
from libs.problems import Problem
from libs.refusal import INVALID
from services.notifications import metrics
from services.notifications.domain import policy
from services.notifications.domain.errors import NotificationError, missing
from services.notifications.domain.rules import CAMPAIGN_RULE
from services.notifications.repository import CampaignRepository, RecipientDirectory, recipient_from
from services.notifications.settings import NotificationsSettings
from services.notifications.usecases.fanout import Fanout
from services.notifications.usecases.templates import Templates

log = get_logger("notifications.campaigns")
CONTACT_FIELDS = ("phone", "email", "locale", "name", "wechat_openid")


class Campaigns:
    def __init__(self, mongo: Mongo, settings: NotificationsSettings, fanout: Fanout, templates: Templates,
                 membership: ServiceClient) -> None:
        self.mongo, self.settings, self.membership = mongo, settings, membership
        self.fanout, self.templates = fanout, templates
        self.campaigns, self.directory = CampaignRepository(mongo), RecipientDirectory(mongo)

    async def start(self, name: str, tag: str, template: str, channels: list[str], data: dict[str, Any],
                    by: str) -> dict:
        """Queue a campaign; the runner sends it. Every channel needs a template first."""
        for channel in channels:
            if not await self.templates.exists_for_campaign(template, channel):
                raise NotificationError("template-missing", f"no {template} template for {channel}; PUT it under "
                                                            f"/notifications/templates first", kind=INVALID)
        doc = {"_id": new_id("ncp"), "name": name, "tag": tag, "template": template,
               "channels": list(dict.fromkeys(channels)), "data": data, "status": "queued",
               "cursor": None, "members_seen": 0, "queued": 0, "suppressed": 0,
               "rate_per_s": self.settings.campaign_rate_per_s, "started_ms": now_ms(), "created_at": utcnow(),
               "created_by": by, "category": CAMPAIGN_RULE.category}
        return await self.mongo.transaction(lambda s: self.campaigns.add(doc, s))

    async def get(self, campaign_id: str) -> dict:
        doc = await self.mongo.read_committed(lambda: self.campaigns.get(campaign_id))
        if doc is None:
            raise missing("campaign")
        return doc

    async def run(self) -> None:
        """Advance every running campaign as far as membership's pages go."""
        for campaign in await self.campaigns.running():
            try:
                while await self.advance(campaign["_id"]):
                    pass
            except Problem as exc:  # membership unavailable: try again on the next run
                log.warning("campaign.membership_unavailable", campaign_id=campaign["_id"], detail=exc.detail)

    async def advance(self, campaign_id: str) -> bool:
        """Fetch one page of the tag's members and queue their deliveries; True while pages remain."""
        campaign = await self.mongo.read_committed(lambda: self.campaigns.get(campaign_id))
        if campaign is None or campaign["status"] not in ("queued", "running"):
            return False
        params = {"tag": campaign["tag"], "limit": str(self.settings.campaign_page_size)}
        if campaign.get("cursor"):
            params["cursor"] = campaign["cursor"]
        try:
            page = await self.membership.get("/members/internal/members", params=params)
        except UpstreamError as exc:
            await self.mongo.transaction(lambda s: self._failed(campaign_id, str(exc), s))
            log.error("campaign.failed", campaign_id=campaign_id, error=str(exc))
            return False
        items = page.get("items", []) if isinstance(page, dict) else []
        next_cursor = page.get("next_cursor") if isinstance(page, dict) else None
        return await self.mongo.transaction(
            lambda s: self._queue_page(campaign["version"], campaign_id, items, next_cursor, s))

    async def _failed(self, campaign_id: str, error: str, session) -> None:
        current = await self.campaigns.get(campaign_id, session)
        await self.campaigns.save({**current, "status": "failed", "last_error": error[:500],
                                   "finished_at": utcnow()}, session)

    async def _queue_page(self, version: int, campaign_id: str, items: list, next_cursor: str | None,
                          session) -> bool:
        current = await self.campaigns.get(campaign_id, session)
        if current is None or current["version"] != version:
            return False  # another replica advanced it meanwhile
        counts = {"members_seen": current["members_seen"], "queued": current["queued"],
                  "suppressed": current["suppressed"]}
        next_free_ms = current.get("next_slot_ms", 0)
        now = utcnow()
        for item in items:
            member_id = item.get("id") or item.get("member_id") if isinstance(item, dict) else None
            if not isinstance(member_id, str):
                continue
            slot, following = policy.campaign_slot(next_free_ms, now_ms(), self.settings.campaign_rate_per_s)
            queued = await self._queue_member(current, member_id, item, slot, now, session)
            counts["members_seen"] += 1
            if queued:
                next_free_ms = following
            counts["queued" if queued else "suppressed"] += 1
            metrics.count_on_commit(metrics.CAMPAIGN_MEMBERS, "queued" if queued else "suppressed")
        done = not next_cursor or not items
        await self.campaigns.save({**current, **counts, "status": "completed" if done else "running",
                                   "cursor": next_cursor, "next_slot_ms": next_free_ms,
                                   **({"finished_at": utcnow()} if done else {})}, session)
        return not done

    async def _queue_member(self, campaign: dict, member_id: str, item: dict, slot_ms: int, now, session) -> bool:
        """The campaign's deliveries to one member; True when at least one will be sent."""
        contact = {k: item.get(k) for k in CONTACT_FIELDS if isinstance(item.get(k), str)}
        if "locale" in contact:
            contact["locale"] = policy.normalize_locale(contact["locale"])
        consent = bool(item.get("marketing_consent", False))
        entry = await self.directory.upsert(member_id, {"kind": "member", "member_id": member_id,
                                                        "marketing_consent": consent, **contact}, session)
        recipient = recipient_from(entry, member_id, "member", {**contact, "marketing_consent": consent})
        created = await self.fanout.deliveries_for(
            rule=CAMPAIGN_RULE, template_type=campaign["template"], event_id=campaign["_id"],
            occurred_at=rfc3339(campaign["created_at"]), data=campaign.get("data", {}), recipient=recipient,
            now=now, session=session, channels=tuple(campaign["channels"]), not_before_ms=slot_ms,
            extra={"campaign_id": campaign["_id"]})
        return any(d["status"] == "pending" for d in created)


CAMPAIGNS = web.AppKey("notifications_campaigns", Campaigns)
