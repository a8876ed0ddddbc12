"""What a member chose: channels, categories, quiet hours and a daily cap (transactional is always on)."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from libs.clock import utcnow
from libs.mongo import Mongo
from services.notifications.repository import PreferenceRepository
from services.notifications.settings import NotificationsSettings


class MemberPreferences:
    def __init__(self, mongo: Mongo, settings: NotificationsSettings) -> None:
        self.mongo = mongo
        self.preferences = PreferenceRepository(mongo, settings.default_daily_cap)

    async def get(self, member_id: str) -> dict:
        return await self.mongo.read_committed(lambda: self.preferences.get_doc(member_id))

    async def change(self, member_id: str, given: dict[str, Any]) -> dict:
        """Apply a partial update: fields left out keep their value; each map merges into the stored one."""

        async def unit(session):
            doc = await self.preferences.get_doc(member_id, session)
            for merged in ("channels", "categories"):
                if given.get(merged) is not None:
                    doc[merged] = {**doc[merged], **given[merged]}
            if "quiet_hours" in given:
                doc["quiet_hours"] = given["quiet_hours"]
            if given.get("daily_cap") is not None:
                doc["daily_cap"] = given["daily_cap"]
            doc["updated_at"] = utcnow()
            return await self.preferences.save(doc, session)

        return await self.mongo.transaction(unit)


PREFERENCES = web.AppKey("notifications_preferences", MemberPreferences)
