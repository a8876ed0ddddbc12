"""Mongo repositories of notifications: one per aggregate. Writes take the caller's transaction session."""
from __future__ import annotations

import copy
import time
from datetime import time as clock
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from libs.clock import utcnow
from libs.mongo import ConcurrencyConflict, IndexSpec, Mongo, VersionedRepository, insert_versioned, replace_versioned
from services.notifications.domain.policy import DEFAULT_TIMEZONE, Preferences, QuietHours, Recipient, normalize_locale
from services.notifications.domain.rules import MEMBER_CATEGORIES, PERSON_CHANNELS



def _index(collection: str, *fields: str, name: str, unique: bool = False, **options) -> IndexSpec:
    return IndexSpec(collection, [(f, ASCENDING) for f in fields], unique=unique, name=name, options=options)


INDEXES = [
    _index("deliveries", "event_id", "recipient_id", "channel", unique=True, name="one_per_event_recipient_channel"),
    # The same rule on one field: `key` names (event, recipient, channel), so checking which deliveries of an
    # event exist is an index lookup on nx-27017 too (it ignores the compound index above and scanned every
    # delivery ever made for each consumed event). Sparse: deliveries stored before `key` existed have none.
    _index("deliveries", "key", unique=True, name="one_per_key", sparse=True),
    _index("deliveries", "status", "due_at_ms", name="due"),
    # What the worker polls: `poll_ms` is the due time of a delivery still to send, absent once it is done.
    # One field, so nx-27017 (which ignores compound indexes) reads only the waiting deliveries instead of
    # scanning every delivery ever made on each poll.
    _index("deliveries", "poll_ms", name="poll", sparse=True),
    _index("deliveries", "recipient_id", name="recipient"),
    _index("deliveries", "event_type", name="event_type"),
    _index("delivery_attempts", "delivery_id", "number", unique=True, name="one_per_attempt"),
    _index("templates", "type", name="type"),
    _index("webhooks", "active", name="active"),
    _index("campaigns", "status", name="status"),
    _index("outbound_messages", "channel", "recorded_ms", name="channel_time"),
    _index("recipients", "phone", name="phone"),
    # Every collection needs an index spec so it exists before the first transaction writes to it
    # (nx-27017 cannot create a collection inside a transaction).
    _index("preferences", "updated_at", name="updated_at"),
    _index("daily_caps", "created_at", name="expire_after_3d", expireAfterSeconds=3 * 86400),
]


READ_CACHE_S = 5.0


class ReadCache:
    """Reads of small documents that change rarely and are read for every event (templates, webhook
    subscriptions, a member's preferences), kept READ_CACHE_S per process and database. A write through
    this process forgets them at once and again after its commit; another replica's write shows within
    READ_CACHE_S."""

    _shared: dict[tuple[str, str], ReadCache] = {}

    def __init__(self) -> None:
        self.values: dict[Any, tuple[float, Any]] = {}

    @classmethod
    def of(cls, mongo: Mongo, collection: str) -> ReadCache:
        return cls._shared.setdefault((mongo.db.name, collection), cls())

    async def read(self, key: Any, load):
        now = time.monotonic()
        known = self.values.get(key)
        if known is not None and now - known[0] < READ_CACHE_S:
            return copy.deepcopy(known[1])
        value = await load()
        if len(self.values) > 10_000:
            self.values.clear()
        self.values[key] = (now, copy.deepcopy(value))
        return value

    def forget(self, mongo: Mongo) -> None:
        self.values.clear()
        mongo.after_commit(self.values.clear)


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
        updated_at = utcnow()
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
        self.mongo = mongo
        self.collection = mongo.db["preferences"]
        self.default_daily_cap = default_daily_cap
        self.cache = ReadCache.of(mongo, "preferences")

    def defaults(self, member_id: str) -> dict:
        return {"_id": member_id, "channels": {c: True for c in PERSON_CHANNELS},
                "categories": {c: True for c in MEMBER_CATEGORIES}, "quiet_hours": None,
                "daily_cap": self.default_daily_cap, "version": 0}

    async def get_doc(self, member_id: str, session=None) -> dict:
        return await self.collection.find_one({"_id": member_id}, session=session) or self.defaults(member_id)

    async def get(self, member_id: str, session=None) -> Preferences:
        """The member's preferences as the fan-out and the worker read them (cached, see ReadCache)."""
        return to_preferences(await self.cache.read(member_id, lambda: self.get_doc(member_id, session)))

    async def save(self, doc: dict, session) -> dict:
        self.cache.forget(self.mongo)
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
        quiet_hours=QuietHours(parse_clock(quiet["start"]), parse_clock(quiet["end"]), quiet.get("timezone", DEFAULT_TIMEZONE))
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
                                                                         "day": day, "created_at": utcnow()}},
                                         upsert=True, session=session)
        result = await self.collection.update_one({"_id": key, "count": {"$lt": cap}}, {"$inc": {"count": 1}},
                                                  session=session)
        return result.modified_count == 1


class TemplateRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.collection = mongo.db["templates"]
        self.cache = ReadCache.of(mongo, "templates")

    @staticmethod
    def key(template_type: str, channel: str, locale: str) -> str:
        return f"{template_type}|{channel}|{locale}"

    async def get(self, template_type: str, channel: str, locale: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": self.key(template_type, channel, locale)}, session=session)

    async def for_rendering(self, template_type: str, channel: str, locale: str, session=None) -> dict | None:
        """`get` for the fan-out, which renders every event with it (cached, see ReadCache)."""
        return await self.cache.read(self.key(template_type, channel, locale),
                                     lambda: self.get(template_type, channel, locale, session))

    async def list(self, template_type: str | None = None) -> list[dict]:
        query = {"type": template_type} if template_type else {}
        return await self.collection.find(query).sort("_id", ASCENDING).to_list()

    async def seed(self, template_type: str, channel: str, locale: str, subject: str, body: str, session) -> bool:
        """Store the built-in default; an admin's edit is never overwritten, an unedited default follows the code."""
        key = self.key(template_type, channel, locale)
        existing = await self.collection.find_one({"_id": key}, session=session)
        doc = {"_id": key, "type": template_type, "channel": channel, "locale": locale, "subject": subject,
               "body": body, "is_default": True, "updated_at": utcnow(), "updated_by": "seed"}
        if existing is None or (existing.get("is_default")
                                and (existing["subject"], existing["body"]) != (subject, body)):
            await self._store(doc, existing, session)
            return True
        return False

    async def put(self, template_type: str, channel: str, locale: str, subject: str, body: str, by: str,
                  session) -> dict:
        existing = await self.get(template_type, channel, locale, session)
        doc = {"_id": self.key(template_type, channel, locale), "type": template_type, "channel": channel,
               "locale": locale, "subject": subject, "body": body, "is_default": False,
               "updated_at": utcnow(), "updated_by": by}
        return await self._store(doc, existing, session)

    async def _store(self, doc: dict, existing: dict | None, session) -> dict:
        self.cache.forget(self.mongo)
        if existing is None:
            return await insert_versioned(self.collection, doc, session)
        return await replace_versioned(self.collection, {**doc, "version": existing["version"]}, session)


WAITING = ("pending", "sending")
LEGACY_POLL_S = 60


def polled(doc: dict) -> dict:
    """The delivery with its `poll_ms`: its due time while it still waits to be sent, absent after."""
    doc = {k: v for k, v in doc.items() if k != "poll_ms"}
    if doc.get("status") in WAITING:
        doc["poll_ms"] = doc["due_at_ms"]
    return doc


class DeliveryRepository(VersionedRepository):
    name = "deliveries"

    def __init__(self, mongo: Mongo) -> None:
        super().__init__(mongo)
        self.attempts = mongo.db["delivery_attempts"]
        self._legacy_polled_ms = 0

    async def add_many(self, docs: list[dict], session) -> list[dict]:
        """Insert the deliveries whose key (event, recipient, channel) is not stored yet: a redelivered event
        or a replayed campaign step creates nothing twice."""
        if not docs:
            return []
        keys = [d["key"] for d in docs]
        stored = await self.collection.find({"key": {"$in": keys}}, {"key": 1}, session=session).to_list()
        existing = {d["key"] for d in stored}
        fresh = [polled(d) for d in docs if d["key"] not in existing]
        if fresh:
            await self.collection.insert_many(fresh, ordered=True, session=session)
        return fresh

    async def save(self, doc: dict, session) -> dict:
        return await replace_versioned(self.collection, polled(doc), session)

    async def due(self, at_ms: int, limit: int) -> list[dict]:
        """Deliveries due to be sent (or whose lease ran out), soonest first, read by the `poll` index. Now
        and then also those stored before `poll_ms` existed (a scan, at most every LEGACY_POLL_S)."""
        docs = await self.mongo.read_committed(lambda: self.collection.find(
            {"poll_ms": {"$lte": at_ms}}).sort("poll_ms", ASCENDING).limit(limit).to_list())
        if at_ms - self._legacy_polled_ms >= LEGACY_POLL_S * 1000 and len(docs) < limit:
            self._legacy_polled_ms = at_ms
            query = {"status": {"$in": list(WAITING)}, "due_at_ms": {"$lte": at_ms}, "poll_ms": {"$exists": False}}
            docs += await self.mongo.read_committed(
                lambda: self.collection.find(query).sort("due_at_ms", ASCENDING).limit(limit - len(docs)).to_list())
        return docs

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


class WebhookRepository(VersionedRepository):
    name = "webhooks"

    async def active_for(self, event_type: str, session) -> list[dict]:
        # Event types are a plain list of strings; filtering in Python keeps the query trivially portable.
        # Every event the suite publishes asks this: the active subscriptions are cached (see ReadCache).
        docs = await ReadCache.of(self.mongo, "webhooks").read(
            "active", lambda: self.collection.find({"active": True}, session=session).to_list())
        return [d for d in docs if event_type in d.get("event_types", [])]

    async def add(self, doc: dict, session) -> dict:
        ReadCache.of(self.mongo, "webhooks").forget(self.mongo)
        return await super().add(doc, session)

    async def save(self, doc: dict, session) -> dict:
        ReadCache.of(self.mongo, "webhooks").forget(self.mongo)
        return await super().save(doc, session)

    async def list(self) -> list[dict]:
        return await self.mongo.read_committed(lambda: self.collection.find({}).sort("_id", ASCENDING).to_list())


class CampaignRepository(VersionedRepository):
    name = "campaigns"

    async def running(self) -> list[dict]:
        return await self.mongo.read_committed(lambda: self.collection.find(
            {"status": {"$in": ["queued", "running"]}}).sort("_id", ASCENDING).to_list())


class OutboundLog:
    """What the sandbox channels and the sink recorded (dev, demo, tests)."""

    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.collection = mongo.db["outbound_messages"]

    async def page(self, filters: dict[str, Any], limit: int) -> list[dict]:
        return await self.mongo.read_committed(
            lambda: self.collection.find(filters).sort("recorded_ms", DESCENDING).limit(limit).to_list())
