"""Mongo repositories of notifications: one per aggregate. Writes take the caller's transaction session."""
from __future__ import annotations

import base64
import time
import uuid
from datetime import UTC, datetime, time as clock
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from libs.mongo import ConcurrencyConflict, IndexSpec, Mongo, replace_versioned
from services.notifications.domain.policy import Preferences, QuietHours, Recipient, normalize_locale
from services.notifications.domain.rules import MEMBER_CATEGORIES, PERSON_CHANNELS

INDEXES = [
    IndexSpec("deliveries", [("event_id", ASCENDING), ("recipient_id", ASCENDING), ("channel", ASCENDING)],
              unique=True, name="one_per_event_recipient_channel"),
    IndexSpec("deliveries", [("status", ASCENDING), ("due_at_ms", ASCENDING)], name="due"),
    IndexSpec("deliveries", [("recipient_id", ASCENDING)], name="recipient"),
    IndexSpec("deliveries", [("event_type", ASCENDING)], name="event_type"),
    IndexSpec("delivery_attempts", [("delivery_id", ASCENDING), ("number", ASCENDING)], unique=True,
              name="one_per_attempt"),
    IndexSpec("templates", [("type", ASCENDING)], name="type"),
    IndexSpec("webhooks", [("active", ASCENDING)], name="active"),
    IndexSpec("campaigns", [("status", ASCENDING)], name="status"),
    IndexSpec("outbound_messages", [("channel", ASCENDING), ("recorded_ms", ASCENDING)], name="channel_time"),
    IndexSpec("recipients", [("phone", ASCENDING)], name="phone"),
    # Every collection needs an index spec so it exists before the first transaction writes to it
    # (nx-27017 cannot create a collection inside a transaction).
    IndexSpec("preferences", [("updated_at", ASCENDING)], name="updated_at"),
    IndexSpec("daily_caps", [("created_at", ASCENDING)], name="expire_after_3d",
              options={"expireAfterSeconds": 3 * 86400}),
]


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id(prefix: str) -> str:
    """Time-ordered ids, so that sorting by _id is sorting by creation (cursor paging)."""
    return f"{prefix}_{now_ms():012x}{uuid.uuid4().hex[:12]}"


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None



class RecipientDirectory:
    """Contact data of members (fed by membership events) and of staff/franchisee inboxes (set by admins)."""

    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["recipients"]

    async def get(self, recipient_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": recipient_id}, session=session)

    async def resolve_member(self, member_id: str, session=None) -> dict | None:
        """The directory entry of a member, following merges to the surviving member (at most a few hops)."""
        doc = await self.get(member_id, session)
        hops = 0
        while doc is not None and doc.get("merged_into") and hops < 5:
            doc = await self.get(doc["merged_into"], session) or doc
            hops += 1
        return doc

    async def upsert(self, recipient_id: str, fields: dict[str, Any], session) -> dict:
        """Merge known contact fields into the entry (absent fields keep their value)."""
        existing = await self.get(recipient_id, session)
        updated_at = datetime.now(UTC)
        if existing is None:
            doc = {"_id": recipient_id, **fields, "updated_at": updated_at, "version": 1}
            await self.collection.insert_one(doc, session=session)
            return doc
        doc = {**existing, **{k: v for k, v in fields.items() if v is not None}, "updated_at": updated_at}
        return await replace_versioned(self.collection, doc, session)


def recipient_from(doc: dict | None, recipient_id: str, kind: str, overrides: dict[str, Any]) -> Recipient:
    """A domain Recipient from the directory entry, with what the event itself carries taking precedence."""
    doc = doc or {}
    values = {k: doc.get(k) for k in ("phone", "email", "wechat_openid", "locale", "name")}
    values.update({k: v for k, v in overrides.items() if v})
    member_id = doc.get("member_id") or (recipient_id if kind == "member" else None)
    return Recipient(id=doc.get("_id", recipient_id), kind=kind, member_id=member_id, phone=values["phone"],
                     email=values["email"], wechat_openid=values["wechat_openid"],
                     locale=normalize_locale(values["locale"]),
                     marketing_consent=bool(overrides.get("marketing_consent", doc.get("marketing_consent", False))),
                     name=values["name"])


def parse_clock(value: str) -> clock:
    hours, minutes = value.split(":")
    return clock(int(hours), int(minutes))


class PreferenceRepository:
    def __init__(self, mongo: Mongo, default_daily_cap: int) -> None:
        self.collection = mongo.db["preferences"]
        self.default_daily_cap = default_daily_cap

    def defaults(self, member_id: str) -> dict:
        return {"_id": member_id, "channels": {c: True for c in PERSON_CHANNELS},
                "categories": {c: True for c in MEMBER_CATEGORIES}, "quiet_hours": None,
                "daily_cap": self.default_daily_cap, "version": 0}

    async def get_doc(self, member_id: str, session=None) -> dict:
        return await self.collection.find_one({"_id": member_id}, session=session) or self.defaults(member_id)

    async def get(self, member_id: str, session=None) -> Preferences:
        return to_preferences(await self.get_doc(member_id, session))

    async def save(self, doc: dict, session) -> dict:
        if doc.get("version", 0) == 0:
            saved = {**doc, "version": 1}
            try:
                await self.collection.insert_one(saved, session=session)
            except DuplicateKeyError:
                # Two first saves raced: retry the unit, which now reads the winner's document.
                raise ConcurrencyConflict(f"preferences {doc['_id']} created concurrently") from None
            return saved
        return await replace_versioned(self.collection, doc, session)


def to_preferences(doc: dict) -> Preferences:
    quiet = doc.get("quiet_hours")
    return Preferences(
        channels={c: bool(doc.get("channels", {}).get(c, True)) for c in PERSON_CHANNELS},
        categories={c: bool(doc.get("categories", {}).get(c, True)) for c in MEMBER_CATEGORIES},
        quiet_hours=QuietHours(parse_clock(quiet["start"]), parse_clock(quiet["end"]), quiet["timezone"])
        if quiet else None,
        daily_cap=int(doc.get("daily_cap", 5)))


class DailyCaps:
    """Counts non-transactional messages per member per local day; taking a slot is an atomic guarded $inc."""

    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["daily_caps"]

    async def take(self, member_id: str, day: str, cap: int, session) -> bool:
        key = f"{member_id}|{day}"
        # Create the counter first (nx ignores $setOnInsert on find_one_and_update), then a guarded $inc.
        await self.collection.update_one({"_id": key}, {"$setOnInsert": {"count": 0, "member_id": member_id,
                                                                         "day": day, "created_at": datetime.now(UTC)}},
                                         upsert=True, session=session)
        result = await self.collection.update_one({"_id": key, "count": {"$lt": cap}}, {"$inc": {"count": 1}},
                                                  session=session)
        return result.modified_count == 1


class TemplateRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["templates"]

    @staticmethod
    def key(template_type: str, channel: str, locale: str) -> str:
        return f"{template_type}|{channel}|{locale}"

    async def get(self, template_type: str, channel: str, locale: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": self.key(template_type, channel, locale)}, session=session)

    async def list(self, template_type: str | None = None) -> list[dict]:
        query = {"type": template_type} if template_type else {}
        return await self.collection.find(query).sort("_id", ASCENDING).to_list()

    async def seed(self, template_type: str, channel: str, locale: str, subject: str, body: str, session) -> bool:
        """Store the built-in default; an admin's edit is never overwritten, an unedited default follows the code."""
        key = self.key(template_type, channel, locale)
        existing = await self.collection.find_one({"_id": key}, session=session)
        doc = {"_id": key, "type": template_type, "channel": channel, "locale": locale, "subject": subject,
               "body": body, "is_default": True, "updated_at": datetime.now(UTC), "updated_by": "seed"}
        if existing is None:
            await self.collection.insert_one({**doc, "version": 1}, session=session)
            return True
        if existing.get("is_default") and (existing["subject"], existing["body"]) != (subject, body):
            await replace_versioned(self.collection, {**doc, "version": existing["version"]}, session)
            return True
        return False

    async def put(self, template_type: str, channel: str, locale: str, subject: str, body: str, by: str,
                  session) -> dict:
        existing = await self.get(template_type, channel, locale, session)
        doc = {"_id": self.key(template_type, channel, locale), "type": template_type, "channel": channel,
               "locale": locale, "subject": subject, "body": body, "is_default": False,
               "updated_at": datetime.now(UTC), "updated_by": by}
        if existing is None:
            doc["version"] = 1
            await self.collection.insert_one(doc, session=session)
            return doc
        return await replace_versioned(self.collection, {**doc, "version": existing["version"]}, session)


class DeliveryRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.collection = mongo.db["deliveries"]
        self.attempts = mongo.db["delivery_attempts"]

    async def get(self, delivery_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": delivery_id}, session=session)

    async def existing_keys(self, event_id: str, session) -> set[tuple[str, str]]:
        docs = await self.collection.find({"event_id": event_id}, {"recipient_id": 1, "channel": 1},
                                          session=session).to_list()
        return {(d["recipient_id"], d["channel"]) for d in docs}

    async def add_many(self, docs: list[dict], session) -> list[dict]:
        """Insert deliveries that do not exist yet for their (event id, recipient, channel)."""
        if not docs:
            return []
        existing = await self.existing_keys(docs[0]["event_id"], session)
        fresh = [d for d in docs if (d["recipient_id"], d["channel"]) not in existing]
        if fresh:
            await self.collection.insert_many(fresh, ordered=True, session=session)
        return fresh

    async def due(self, at_ms: int, limit: int) -> list[dict]:
        query = {"status": {"$in": ["pending", "sending"]}, "due_at_ms": {"$lte": at_ms}}
        return await self.mongo.read_committed(
            lambda: self.collection.find(query).sort("due_at_ms", ASCENDING).limit(limit).to_list())

    async def save(self, doc: dict, session) -> dict:
        return await replace_versioned(self.collection, doc, session)

    async def add_attempt(self, attempt: dict, session) -> None:
        await self.attempts.insert_one(attempt, session=session)

    async def attempts_of(self, delivery_ids: list[str]) -> dict[str, list[dict]]:
        if not delivery_ids:
            return {}
        docs = await self.mongo.read_committed(lambda: self.attempts.find(
            {"delivery_id": {"$in": delivery_ids}}).sort("number", ASCENDING).to_list())
        grouped: dict[str, list[dict]] = {}
        for doc in docs:
            grouped.setdefault(doc["delivery_id"], []).append(doc)
        return grouped

    async def page(self, filters: dict[str, Any], after: str | None, limit: int) -> list[dict]:
        query = dict(filters)
        if after:
            query["_id"] = {"$lt": after}
        return await self.mongo.read_committed(
            lambda: self.collection.find(query).sort("_id", DESCENDING).limit(limit).to_list())


class WebhookRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.collection = mongo.db["webhooks"]

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one({**doc, "version": 1}, session=session)

    async def get(self, webhook_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": webhook_id}, session=session)

    async def active_for(self, event_type: str, session) -> list[dict]:
        # Event types are a plain list of strings; filtering in Python keeps the query trivially portable.
        docs = await self.collection.find({"active": True}, session=session).to_list()
        return [d for d in docs if event_type in d.get("event_types", [])]

    async def list(self) -> list[dict]:
        return await self.mongo.read_committed(lambda: self.collection.find({}).sort("_id", ASCENDING).to_list())

    async def save(self, doc: dict, session) -> dict:
        return await replace_versioned(self.collection, doc, session)


class CampaignRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.collection = mongo.db["campaigns"]

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one({**doc, "version": 1}, session=session)

    async def get(self, campaign_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": campaign_id}, session=session)

    async def running(self) -> list[dict]:
        return await self.mongo.read_committed(lambda: self.collection.find(
            {"status": {"$in": ["queued", "running"]}}).sort("_id", ASCENDING).to_list())

    async def save(self, doc: dict, session) -> dict:
        return await replace_versioned(self.collection, doc, session)


class OutboundLog:
    """What the sandbox channels and the sink recorded (dev, demo, tests)."""

    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.collection = mongo.db["outbound_messages"]

    async def page(self, filters: dict[str, Any], limit: int) -> list[dict]:
        return await self.mongo.read_committed(
            lambda: self.collection.find(filters).sort("recorded_ms", DESCENDING).limit(limit).to_list())
