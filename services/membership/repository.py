"""Mongo repositories, one per aggregate. Every write takes the caller's transaction session."""
from __future__ import annotations

import contextlib
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from libs.clock import utcnow
from libs.mongo import ConcurrencyConflict, IndexSpec, Mongo, replace_versioned

INDEXES = [
    IndexSpec("staff", [("username", ASCENDING)], unique=True, name="username_unique"),
    IndexSpec("identities", [("member_id", ASCENDING)], name="member"),
    IndexSpec("members", [("tags", ASCENDING)], name="tags"),
    IndexSpec("members", [("bound_store_id", ASCENDING)], name="bound_store"),
    IndexSpec("members", [("status", ASCENDING), ("last_activity_ms", ASCENDING)], name="activity"),
    IndexSpec("coupons", [("member_id", ASCENDING), ("state", ASCENDING)], name="member_state"),
    IndexSpec("coupons", [("state", ASCENDING), ("valid_until_ms", ASCENDING)], name="state_until"),
    IndexSpec("points_ledger", [("member_id", ASCENDING), ("at_ms", ASCENDING)], name="member_time"),
    IndexSpec("points_ledger", [("order_id", ASCENDING)], name="order"),
    IndexSpec("purchases", [("member_id", ASCENDING), ("at_ms", ASCENDING)], name="member_time"),
    IndexSpec("checkout_holds", [("state", ASCENDING), ("expires_at_ms", ASCENDING)], name="state_expiry"),
    IndexSpec("checkout_holds", [("member_id", ASCENDING)], name="member"),
    IndexSpec("qr_codes", [("store_id", ASCENDING)], name="store"),
    IndexSpec("refresh_tokens", [("family_id", ASCENDING)], name="family"),
    IndexSpec("scan_tokens", [("expires_at_ms", ASCENDING)], name="expiry"),
    IndexSpec("identity_scans", [("staff_id", ASCENDING)], name="staff"),
    IndexSpec("revocations", [("at_ms", ASCENDING)], name="at"),
]
COLLECTIONS = ["signing_keys", "otp_challenges", "login_failures", "campaigns", "coupon_templates",
               "coupon_member_counts", "campaign_grants", "checkout_holds", "member_stats"]


@contextlib.contextmanager
def refuse_duplicates_as_conflict():
    """A concurrent insert of the same key lost the race: retry the unit of work (it will see the winner)."""
    try:
        yield
    except DuplicateKeyError as exc:
        raise ConcurrencyConflict(str(exc)) from None


async def _put(collection, doc: dict, session, replace: bool) -> None:
    """Insert a new document (a taken id is a DuplicateKeyError), or replace it (the demo loader)."""
    if replace:
        await collection.replace_one({"_id": doc["_id"]}, doc, upsert=True, session=session)
    else:
        await collection.insert_one(doc, session=session)


async def _hand_over(collection, from_member: str, to_member: str, session) -> int:
    """A merge: the absorbed member's entries become the survivor's, marked with where they came from."""
    result = await collection.update_many({"member_id": from_member},
                                          {"$set": {"member_id": to_member, "merged_from": from_member}},
                                          session=session)
    return result.modified_count


class Documents:
    """A collection of documents keyed by `_id`: what most repositories below start from."""

    collection_name = ""

    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db[self.collection_name]

    async def get(self, key: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": key}, session=session)

    async def set_fields(self, key: str, fields: dict, session) -> None:
        await self.collection.update_one({"_id": key}, {"$set": fields}, session=session)

    async def move_member(self, from_member: str, to_member: str, session) -> None:
        """Documents of a member absorbed by a merge become the survivor's."""
        await self.collection.update_many({"member_id": from_member}, {"$set": {"member_id": to_member}},
                                          session=session)


class KeyRepository:
    """The signing key ring: one document shared by every replica."""

    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["signing_keys"]

    async def get(self, session=None) -> dict | None:
        return await self.collection.find_one({"_id": "keyring"}, session=session)

    async def insert(self, doc: dict, session) -> None:
        await self.collection.insert_one(doc, session=session)

    async def save(self, doc: dict, session) -> dict:
        return await replace_versioned(self.collection, doc, session)


class StaffRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["staff"]
        self.failures = mongo.db["login_failures"]

    async def by_username(self, username: str, session=None) -> dict | None:
        return await self.collection.find_one({"username": username}, session=session)

    async def insert(self, doc: dict, session) -> None:
        await self.collection.insert_one(doc, session=session)

    async def set_password(self, staff_id: str, password_hash: str, session, change_required: bool = False) -> None:
        await self.collection.update_one({"_id": staff_id}, {"$set": {
            "password_hash": password_hash, "password_change_required": change_required}}, session=session)

    async def set_fields(self, staff_id: str, fields: dict, session) -> bool:
        result = await self.collection.update_one({"_id": staff_id}, {"$set": fields}, session=session)
        return result.matched_count == 1

    async def get(self, staff_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": staff_id}, session=session)

    async def upsert(self, doc: dict, session) -> None:
        await self.collection.replace_one({"_id": doc["_id"]}, doc, upsert=True, session=session)

    async def list(self, store_id: str | None = None) -> list[dict]:
        query = {"store_ids": store_id} if store_id else {}
        return await self.collection.find(query, {"password_hash": 0}).sort("_id", ASCENDING).to_list(1000)

    async def failure_records(self, keys: list[str], session) -> dict[str, dict]:
        """The login-failure records under these keys (a username, a username and requester)."""
        found = await self.failures.find({"_id": {"$in": keys}}, session=session).to_list(len(keys))
        return {doc["_id"]: doc for doc in found}

    async def count_failure(self, key: str, seen: dict | None, failures: int, now_ms: int, session) -> None:
        """Store the new count only if the record is still the one judged (compare-and-set), so two attempts
        judged on the same count cannot both pass; the loser's unit of work is retried and sees the new count."""
        doc = {"_id": key, "failures": failures, "last_failure_ms": now_ms}
        if seen is None:
            with refuse_duplicates_as_conflict():
                await self.failures.insert_one(doc, session=session)
            return
        result = await self.failures.replace_one({"_id": key, "failures": seen["failures"],
                                                  "last_failure_ms": seen["last_failure_ms"]}, doc, session=session)
        if result.matched_count == 0:
            raise ConcurrencyConflict(f"login failures of {key} changed")

    async def clear_failures(self, keys: list[str], session) -> None:
        await self.failures.delete_many({"_id": {"$in": keys}}, session=session)


class RefreshTokenRepository(Documents):
    """Refresh tokens, stored by digest only; a family is one login and everything refreshed from it."""

    collection_name = "refresh_tokens"

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one(doc, session=session)

    async def use(self, digest: str, session) -> bool:
        result = await self.collection.update_one({"_id": digest, "used": False, "revoked": False},
                                                  {"$set": {"used": True}}, session=session)
        return result.modified_count == 1

    async def revoke_family(self, family_id: str, session) -> None:
        await self.collection.update_many({"family_id": family_id}, {"$set": {"revoked": True}}, session=session)

    async def revoke_subject(self, kind: str, subject_id: str, session) -> None:
        """Every login of one account (after a password change)."""
        await self.collection.update_many({"kind": kind, "subject_id": subject_id}, {"$set": {"revoked": True}},
                                          session=session)


class RevocationRepository(Documents):
    """Ended sessions (a login's `sid`) and accounts whose earlier tokens no longer count (`not_before_ms`),
    kept until the longest-lived access token issued before them has expired. The gateway polls them."""

    collection_name = "revocations"

    async def end_session(self, sid: str, at_ms: int, keep_until_ms: int, session) -> None:
        await self.collection.replace_one({"_id": f"sid|{sid}"}, {
            "_id": f"sid|{sid}", "kind": "session", "sid": sid, "at_ms": at_ms, "expires_at_ms": keep_until_ms},
            upsert=True, session=session)

    async def end_tokens_before(self, subject: str, not_before_ms: int, at_ms: int, keep_until_ms: int,
                                session) -> None:
        await self.collection.replace_one({"_id": f"sub|{subject}"}, {
            "_id": f"sub|{subject}", "kind": "subject", "subject": subject, "not_before_ms": not_before_ms,
            "at_ms": at_ms, "expires_at_ms": keep_until_ms}, upsert=True, session=session)

    async def since(self, since_ms: int, now_ms: int, limit: int = 10_000) -> list[dict]:
        found = await self.collection.find({"at_ms": {"$gte": since_ms}}).sort("at_ms", ASCENDING).to_list(limit)
        return [doc for doc in found if doc["expires_at_ms"] > now_ms]


class OtpRepository(Documents):
    """Pending one-time codes, one per phone."""

    collection_name = "otp_challenges"

    async def put(self, doc: dict, session) -> None:
        await self.collection.replace_one({"_id": doc["_id"]}, doc, upsert=True, session=session)

    async def count_attempt(self, phone: str, max_attempts: int, session) -> bool:
        """Count one attempt before judging it, so concurrent guesses cannot exceed the limit."""
        result = await self.collection.update_one({"_id": phone, "attempts": {"$lt": max_attempts}, "used": False},
                                                  {"$inc": {"attempts": 1}}, session=session)
        return result.modified_count == 1

    async def burn(self, phone: str, digest: str, session) -> bool:
        """Mark the code used; only one caller can use a code."""
        result = await self.collection.update_one({"_id": phone, "digest": digest, "used": False},
                                                  {"$set": {"used": True}}, session=session)
        return result.modified_count == 1


class MemberRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.db = mongo.db
        self.collection = mongo.db["members"]
        self.identities = mongo.db["identities"]
        self.stats = mongo.db["member_stats"]

    async def get(self, member_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": member_id}, session=session)

    async def get_live(self, member_id: str, session=None) -> dict | None:
        """The member, following merges to the survivor."""
        for _ in range(5):
            doc = await self.get(member_id, session)
            if doc is None or doc.get("status") != "merged":
                return doc
            member_id = doc["merged_into"]
        return None

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one({**doc, "version": 1}, session=session)

    async def save(self, doc: dict, session) -> dict:
        return await replace_versioned(self.collection, doc, session)

    async def member_id_for(self, kind: str, value: str, session=None) -> str | None:
        doc = await self.identities.find_one({"_id": f"{kind}:{value}"}, session=session)
        return doc["member_id"] if doc else None

    async def add_identity(self, member_id: str, kind: str, value: str, verified: bool, session,
                           named_by: str | None = None) -> None:
        await self.identities.insert_one({"_id": f"{kind}:{value}", "kind": kind, "value": value,
                                          "member_id": member_id, "verified": verified, "linked_at": utcnow(),
                                          "named_by": named_by}, session=session)

    async def identity(self, kind: str, value: str, session=None) -> dict | None:
        return await self.identities.find_one({"_id": f"{kind}:{value}"}, session=session)

    async def claim_identity(self, kind: str, value: str, from_member: str, to_member: str, session) -> bool:
        """Move one identity, guarded on its holder (a concurrent claim loses)."""
        result = await self.identities.update_one({"_id": f"{kind}:{value}", "member_id": from_member},
                                                  {"$set": {"member_id": to_member, "named_by": None}},
                                                  session=session)
        return result.modified_count == 1

    async def identities_of(self, member_id: str, session=None) -> list[dict]:
        return await self.identities.find({"member_id": member_id}, session=session).to_list(100)

    async def move_identities(self, from_member: str, to_member: str, session) -> int:
        result = await self.identities.update_many({"member_id": from_member}, {"$set": {"member_id": to_member}},
                                                   session=session)
        return result.modified_count

    async def add_tags(self, member_id: str, tags: list[str], session) -> None:
        if tags:
            await self.collection.update_one({"_id": member_id}, {"$addToSet": {"tags": {"$each": tags}},
                                                               "$inc": {"version": 1}},
                                             session=session)

    async def bind_if_unbound(self, member_id: str, at_ms: int, binding: dict, session) -> bool:
        """First touch wins: bind only while no binding is in force (guarded, so concurrent scans agree)."""
        result = await self.collection.update_one(
            {"_id": member_id, "bound_until_ms": {"$lte": at_ms}},
            {"$set": {**binding, "bound_at_ms": at_ms}, "$inc": {"version": 1}}, session=session)
        return result.modified_count == 1

    async def change_points(self, member_id: str, delta: int, session, allow_debt: bool = False) -> bool:
        """Guarded balance counter: a debit only applies while the balance covers it (unless it may leave a debt:
        a claw-back)."""
        query: dict[str, Any] = {"_id": member_id}
        if delta < 0 and not allow_debt:
            query["points_balance"] = {"$gte": -delta}
        result = await self.collection.update_one(query, {"$inc": {"points_balance": delta, "version": 1}},
                                                 session=session)
        return result.modified_count == 1

    async def set_fields(self, member_id: str, fields: dict, session) -> None:
        await self.collection.update_one({"_id": member_id}, {"$set": fields, "$inc": {"version": 1}},
                                         session=session)

    async def page(self, query: dict, cursor: str | None, limit: int, projection: dict | None = None) -> list[dict]:
        if cursor:
            query = {**query, "_id": {"$gt": cursor}}
        return await self.collection.find(query, projection).sort("_id", ASCENDING).limit(limit).to_list(limit)

    async def above_tier(self, tier_names: list[str]) -> list[dict]:
        return await self.collection.find({"status": "active", "tier": {"$in": tier_names}},
                                          {"_id": 1, "tier": 1}).to_list(None)

    async def count(self, query: dict) -> int:
        return await self.collection.count_documents(query)

    async def dormant_candidates(self, before_ms: int, limit: int = 500) -> list[dict]:
        return await self.collection.find({"status": "active", "dormant": False,
                                           "last_activity_ms": {"$lt": before_ms}}).limit(limit).to_list(limit)

    # -- analytics fed by order events --------------------------------------------------------------
    async def stats_of(self, member_id: str, session=None) -> dict | None:
        return await self.stats.find_one({"_id": member_id}, session=session)

    async def put_stats(self, doc: dict, session) -> None:
        await self.stats.replace_one({"_id": doc["_id"]}, doc, upsert=True, session=session)

    async def delete_stats(self, member_id: str, session) -> None:
        await self.stats.delete_one({"_id": member_id}, session=session)


class LedgerRepository:
    """The append-only points ledger: one document per entry."""

    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["points_ledger"]

    async def append(self, entry: dict, session) -> None:
        await self.collection.insert_one(entry, session=session)

    async def entries(self, member_id: str, session=None) -> list[dict]:
        return await self.collection.find({"member_id": member_id}, session=session).sort(
            [("at_ms", ASCENDING), ("_id", ASCENDING)]).to_list(None)

    async def for_order(self, order_id: str, session=None) -> list[dict]:
        return await self.collection.find({"order_id": order_id}, session=session).to_list(None)

    async def page(self, member_id: str, cursor: str | None, limit: int) -> list[dict]:
        query: dict[str, Any] = {"member_id": member_id}
        if cursor:
            query["_id"] = {"$lt": cursor}
        return await self.collection.find(query).sort("_id", DESCENDING).limit(limit).to_list(limit)

    async def sum_for(self, member_id: str, session=None) -> int:
        return sum(e["amount"] for e in await self.collection.find({"member_id": member_id}, {"amount": 1},
                                                                   session=session).to_list(None))

    async def move(self, from_member: str, to_member: str, session) -> int:
        return await _hand_over(self.collection, from_member, to_member, session)

    async def members_with_lots_expiring(self, before_ms: int, limit: int = 1000) -> list[str]:
        return await self.collection.distinct("member_id", {"expires_at_ms": {"$lte": before_ms}})


class CouponRepository(Documents):
    """Coupons, and what they are issued from: templates, campaigns (with their grants), QR codes."""

    collection_name = "coupons"

    def __init__(self, mongo: Mongo) -> None:
        super().__init__(mongo)
        self.templates = mongo.db["coupon_templates"]
        self.member_counts = mongo.db["coupon_member_counts"]
        self.campaigns = mongo.db["campaigns"]
        self.grants = mongo.db["campaign_grants"]
        self.qr_codes = mongo.db["qr_codes"]

    async def of_member(self, member_id: str, state: str | None = None, session=None) -> list[dict]:
        query: dict[str, Any] = {"member_id": member_id}
        if state:
            query["state"] = state
        return await self.collection.find(query, session=session).sort("_id", ASCENDING).to_list(1000)

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one({**doc, "version": 1}, session=session)

    async def move_state(self, code: str, from_state: str, fields: dict, session) -> bool:
        """Guarded transition: only one caller moves a coupon out of `from_state` (no double redemption)."""
        result = await self.collection.update_one({"_id": code, "state": from_state},
                                                  {"$set": fields, "$inc": {"version": 1}}, session=session)
        return result.modified_count == 1

    async def move_owner(self, from_member: str, to_member: str, session) -> int:
        return await _hand_over(self.collection, from_member, to_member, session)

    async def expired_issued(self, now: int, limit: int = 1000) -> list[dict]:
        return await self.collection.find({"state": "issued", "valid_until_ms": {"$lte": now}}).limit(limit).to_list(limit)

    # templates ----------------------------------------------------------------------------------
    async def template(self, template_id: str, session=None) -> dict | None:
        return await self.templates.find_one({"_id": template_id}, session=session)

    async def put_template(self, doc: dict, session) -> None:
        await self.templates.insert_one(doc, session=session)

    async def upsert_template(self, doc: dict, session) -> None:
        """Demo loader: write the definition but never reset the issue counter."""
        existing = await self.templates.find_one({"_id": doc["_id"]}, session=session)
        if existing is None:
            await self.templates.insert_one({**doc, "issued_count": 0}, session=session)

    async def templates_list(self) -> list[dict]:
        return await self.templates.find({}).sort("_id", ASCENDING).to_list(1000)

    async def take_from_cap(self, template_id: str, total_cap: int, session) -> bool:
        result = await self.templates.update_one({"_id": template_id, "issued_count": {"$lt": total_cap}},
                                                 {"$inc": {"issued_count": 1}}, session=session)
        return result.modified_count == 1

    async def member_count(self, template_id: str, member_id: str, session=None) -> int:
        """Coupons of this template the member was given so far."""
        doc = await self.member_counts.find_one({"_id": f"{template_id}:{member_id}"}, session=session)
        return doc["count"] if doc else 0

    async def take_member_allowance(self, template_id: str, member_id: str, limit: int, session) -> bool:
        key = f"{template_id}:{member_id}"
        # The counter must exist before the guarded increment (a missing field never matches $lt).
        await self.member_counts.update_one({"_id": key}, {"$setOnInsert": {"count": 0}}, upsert=True, session=session)
        result = await self.member_counts.update_one({"_id": key, "count": {"$lt": limit}}, {"$inc": {"count": 1}},
                                                     session=session)
        return result.modified_count == 1

    # campaigns and QR codes ----------------------------------------------------------------------
    async def campaign(self, campaign_id: str, session=None) -> dict | None:
        return await self.campaigns.find_one({"_id": campaign_id}, session=session)

    async def put_campaign(self, doc: dict, session, replace: bool = False) -> None:
        await _put(self.campaigns, doc, session, replace)

    async def campaigns_list(self) -> list[dict]:
        return await self.campaigns.find({}).sort("_id", ASCENDING).to_list(1000)

    async def granted(self, campaign_id: str, member_id: str, session=None) -> bool:
        return await self.grants.find_one({"_id": f"{campaign_id}:{member_id}"}, session=session) is not None

    async def record_grant(self, campaign_id: str, member_id: str, coupon_code: str | None, session) -> None:
        await self.grants.insert_one({"_id": f"{campaign_id}:{member_id}", "campaign_id": campaign_id,
                                      "member_id": member_id, "coupon_code": coupon_code, "at": utcnow()},
                                     session=session)

    async def move_grants(self, from_member: str, to_member: str, session) -> None:
        """Grants of the absorbed member become the survivor's (a campaign coupon stays once per person)."""
        for grant in await self.grants.find({"member_id": from_member}, session=session).to_list(None):
            await self.grants.delete_one({"_id": grant["_id"]}, session=session)
            key = f"{grant['campaign_id']}:{to_member}"
            if await self.grants.find_one({"_id": key}, session=session) is None:
                await self.grants.insert_one({**grant, "_id": key, "member_id": to_member}, session=session)

    async def qr(self, code: str, session=None) -> dict | None:
        return await self.qr_codes.find_one({"_id": code}, session=session)

    async def put_qr(self, doc: dict, session, replace: bool = False) -> None:
        await _put(self.qr_codes, doc, session, replace)

    async def qr_list(self, store_id: str | None = None) -> list[dict]:
        query = {"store_id": store_id} if store_id else {}
        return await self.qr_codes.find(query).sort("_id", ASCENDING).to_list(1000)


class HoldRepository(Documents):
    """Checkout holds (coupons locked and points reserved for one order), keyed by order id."""

    collection_name = "checkout_holds"

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one({**doc, "version": 1}, session=session)

    async def move_state(self, order_id: str, from_state: str, to_state: str, session, **fields) -> bool:
        result = await self.collection.update_one({"_id": order_id, "state": from_state},
                                                  {"$set": {"state": to_state, **fields}, "$inc": {"version": 1}},
                                                  session=session)
        return result.modified_count == 1

    async def points_held(self, member_id: str, session) -> int:
        """Points the member's unpaid orders hold (not yet committed nor given back)."""
        held = await self.collection.find({"member_id": member_id, "state": "held"}, session=session).to_list(None)
        return sum(h.get("points_used", 0) - h.get("points_returned", 0) for h in held)

    async def expired_held(self, now_ms: int, limit: int = 500) -> list[dict]:
        """Holds still held past their expiry (oldest expiry first)."""
        return await self.collection.find({"state": "held", "expires_at_ms": {"$lte": now_ms}}).sort(
            "expires_at_ms", ASCENDING).limit(limit).to_list(limit)


class PurchaseRepository(Documents):
    """Paid orders per member: the rolling 12-month amount behind tiers, and refunds against them."""

    collection_name = "purchases"

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one(doc, session=session)

    async def replace(self, doc: dict, session) -> None:
        await self.collection.replace_one({"_id": doc["_id"]}, doc, session=session)

    async def rolling_paid(self, member_id: str, since_ms: int, session=None) -> int:
        docs = await self.collection.find({"member_id": member_id, "at_ms": {"$gte": since_ms}},
                                          session=session).to_list(None)
        return sum(max(0, d["amount"] - d.get("refunded", 0)) for d in docs if d.get("amount") is not None)


class ScanRepository:
    """Scan tokens (what a member's checkout names to credit the QR they just scanned), the hourly counters of
    staff identity scans, and the audit trail of those scans and of identities claimed back."""

    def __init__(self, mongo: Mongo) -> None:
        self.tokens = mongo.db["scan_tokens"]
        self.counters = mongo.db["identity_scan_counts"]
        self.audit = mongo.db["identity_scans"]

    async def add_token(self, doc: dict, session) -> None:
        await self.tokens.insert_one(doc, session=session)

    async def token(self, digest: str, session=None) -> dict | None:
        return await self.tokens.find_one({"_id": digest}, session=session)

    async def take_scan(self, staff_id: str, window: int, limit: int, session) -> bool:
        key = f"{staff_id}:{window}"
        # The counter must exist before the guarded increment (a missing field never matches $lt).
        await self.counters.update_one({"_id": key}, {"$setOnInsert": {"count": 0, "staff_id": staff_id}},
                                       upsert=True, session=session)
        result = await self.counters.update_one({"_id": key, "count": {"$lt": limit}}, {"$inc": {"count": 1}},
                                                session=session)
        return result.modified_count == 1

    async def record(self, doc: dict, session) -> None:
        await self.audit.insert_one(doc, session=session)

    async def of_staff(self, staff_id: str, limit: int = 100) -> list[dict]:
        return await self.audit.find({"staff_id": staff_id}).sort("_id", DESCENDING).to_list(limit)
