"""Mongo repositories of settlement, one per aggregate. Every write takes the caller's transaction session.

Journal documents (postings, entries) are only ever inserted: corrections are new postings. Account
documents carry maintained figures (balance, freeze boundary, amount already batched for payout) that the
journal and the statement closing both update, so concurrent writers of one account conflict and retry.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError

from libs.mongo import ConcurrencyConflict, IndexSpec, Mongo, replace_versioned
from services.settlement.domain import accounts as acct
from services.settlement.domain.journal import Entry
from services.settlement.domain.orders import LocationInfo
from services.settlement.domain.reconciliation import CapturedPayment
from services.settlement.domain.rules import SplitRule
from services.settlement.domain.statements import StatementLine

INDEXES = [
    IndexSpec("split_rules", [("version", ASCENDING)], unique=True, name="version_unique"),
    IndexSpec("postings", [("key", ASCENDING)], unique=True, name="key_unique"),
    IndexSpec("postings", [("order_id", ASCENDING)], name="order_id"),
    IndexSpec("postings", [("anomaly", ASCENDING)], name="anomaly"),
    IndexSpec("entries", [("account", ASCENDING), ("booked_ms", ASCENDING)], name="account_booked"),
    IndexSpec("entries", [("posting_id", ASCENDING)], name="posting_id"),
    IndexSpec("accounts", [("kind", ASCENDING)], name="kind"),
    IndexSpec("statements", [("granularity", ASCENDING), ("start_ms", ASCENDING)], name="period"),
    IndexSpec("statements", [("account", ASCENDING)], name="account"),
    IndexSpec("payments", [("captured_ms", ASCENDING)], name="captured_ms"),
    IndexSpec("payout_batches", [("granularity", ASCENDING), ("start_ms", ASCENDING)], unique=True,
              name="one_batch_per_period"),
    IndexSpec("reconciliations", [("created_ms", ASCENDING)], name="created_ms"),
    IndexSpec("returns_received", [("order_id", ASCENDING)], name="order_id"),
    # Also makes sure the collection exists before the first (transactional) write into it.
    IndexSpec("locations", [("ownership", ASCENDING)], name="ownership"),
]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


async def insert_or_conflict(collection, doc: dict, session) -> None:
    """Insert; a unique-key clash means a concurrent transaction wrote the same thing first, so the whole
    unit of work is retried (and then finds what the other one wrote) instead of failing."""
    try:
        await collection.insert_one(doc, session=session)
    except DuplicateKeyError:
        raise ConcurrencyConflict(f"{collection.name}: {doc.get('_id')} written concurrently") from None


def now_utc() -> datetime:
    return datetime.now(UTC)


class SplitRuleRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["split_rules"]

    async def documents(self, session=None) -> list[dict]:
        return await self.collection.find({}, session=session).sort("version", ASCENDING).to_list()

    async def all(self, session=None) -> list[SplitRule]:
        return [SplitRule.from_dict(doc) for doc in await self.documents(session)]

    async def latest(self, session=None) -> SplitRule | None:
        doc = await self.collection.find_one({}, sort=[("version", DESCENDING)], session=session)
        return SplitRule.from_dict(doc) if doc else None

    async def get(self, version: int, session=None) -> dict | None:
        return await self.collection.find_one({"version": version}, session=session)

    async def add(self, rule: SplitRule, session, created_by: str | None = None) -> dict:
        doc = {"_id": f"spr_v{rule.version}", **rule.to_dict(), "created_at": now_utc(), "created_by": created_by}
        # Someone taking this version number concurrently makes the transaction retry with the next one.
        await insert_or_conflict(self.collection, doc, session)
        return doc

    async def add_if_absent(self, rule: SplitRule, session) -> None:
        if await self.collection.find_one({"version": rule.version}, session=session) is None:
            await self.add(rule, session, created_by="system")


class LocationRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["locations"]

    async def known(self, session=None) -> dict[str, LocationInfo]:
        docs = await self.collection.find({}, session=session).to_list()
        return {doc["_id"]: LocationInfo(id=doc["_id"], kind=doc.get("kind", "store"),
                                         ownership=doc.get("ownership", "direct"),
                                         franchisee_id=doc.get("franchisee_id")) for doc in docs}

    async def upsert(self, doc: dict, session) -> None:
        await self.collection.replace_one({"_id": doc["_id"]}, doc, upsert=True, session=session)


class JournalRepository:
    """Postings, their entries and the accounts they move: the journal aggregate."""

    def __init__(self, mongo: Mongo) -> None:
        self.postings = mongo.db["postings"]
        self.entries = mongo.db["entries"]
        self.accounts = mongo.db["accounts"]

    async def posting_by_key(self, key: str, session=None) -> dict | None:
        return await self.postings.find_one({"key": key}, session=session)

    async def postings_of_order(self, order_id: str, kind: str | None = None, session=None) -> list[dict]:
        query = {"order_id": order_id, **({"kind": kind} if kind else {})}
        return await self.postings.find(query, session=session).sort("booked_ms", ASCENDING).to_list()

    async def anomalies(self, after: str | None, limit: int) -> list[dict]:
        query: dict = {"anomaly": True}
        if after:
            query["_id"] = {"$gt": after}
        return await self.postings.find(query).sort("_id", ASCENDING).limit(limit).to_list()

    async def frozen_until(self, account_ids: Iterable[str], session) -> int:
        docs = await self.accounts.find({"_id": {"$in": list(account_ids)}}, {"frozen_until_ms": 1},
                                        session=session).to_list()
        return max([doc.get("frozen_until_ms", 0) for doc in docs] or [0])

    async def insert(self, posting: dict, entries: tuple[Entry, ...], session,
                     franchisee_of: dict[str, str | None]) -> list[dict]:
        """Write the posting, its entries, and each account's balance (the account is opened on first use).

        A DuplicateKeyError on the posting key means a concurrent writer posted it first (see insert_or_conflict)."""
        await insert_or_conflict(self.postings, posting, session)
        docs = [{"_id": new_id("ent"), "posting_id": posting["_id"], "key": posting["key"], "account": entry.account,
                 "kind": posting["kind"], "order_id": posting.get("order_id"), "debit": entry.debit,
                 "credit": entry.credit, "booked_ms": posting["booked_ms"], "booked_at": posting["booked_at"],
                 "memo": posting.get("memo", "")} for entry in entries]
        if docs:
            await self.entries.insert_many(docs, session=session)
        effects: dict[str, int] = {}
        for entry in entries:
            effects[entry.account] = effects.get(entry.account, 0) + entry.balance_effect
        for account, effect in sorted(effects.items()):
            kind, party_id = acct.party_of(account)
            opened = {"kind": kind, "party_id": party_id, "frozen_until_ms": 0, "committed_payouts": 0,
                      "created_ms": posting["booked_ms"]}
            if account in franchisee_of:
                opened["franchisee_id"] = franchisee_of[account]
            await self.accounts.update_one({"_id": account}, {"$setOnInsert": opened, "$inc": {"balance": effect}},
                                           upsert=True, session=session)
        return docs

    async def account(self, account_id: str, session=None) -> dict | None:
        return await self.accounts.find_one({"_id": account_id}, session=session)

    async def all_accounts(self, session=None, kinds: Iterable[str] | None = None) -> list[dict]:
        query = {"kind": {"$in": list(kinds)}} if kinds is not None else {}
        return await self.accounts.find(query, session=session).sort("_id", ASCENDING).to_list()

    async def freeze(self, account_doc: dict, until_ms: int, session) -> None:
        """Move the account's freeze boundary forward; conflicts with concurrent postings on the account."""
        current = account_doc.get("frozen_until_ms", 0)
        if until_ms <= current:
            return
        result = await self.accounts.update_one({"_id": account_doc["_id"], "frozen_until_ms": current},
                                                {"$set": {"frozen_until_ms": until_ms}}, session=session)
        if result.matched_count != 1:
            raise ConcurrencyConflict(f"account {account_doc['_id']} changed while closing")

    async def add_committed_payout(self, account_id: str, amount: int, session) -> None:
        await self.accounts.update_one({"_id": account_id}, {"$inc": {"committed_payouts": amount}}, session=session)

    async def sum_before(self, account_id: str, before_ms: int, session=None, kinds: list[str] | None = None) -> int:
        """Credits minus debits of the account booked before `before_ms` (optionally of some posting kinds)."""
        match = {"account": account_id, "booked_ms": {"$lt": before_ms}}
        if kinds is not None:
            match["kind"] = {"$in": kinds}
        cursor = await self.entries.aggregate([{"$match": match}, {"$group": {
            "_id": None, "credit": {"$sum": "$credit"}, "debit": {"$sum": "$debit"}}}], session=session)
        rows = await cursor.to_list()
        return (rows[0]["credit"] - rows[0]["debit"]) if rows else 0

    async def lines_between(self, account_id: str, start_ms: int, end_ms: int, session=None) -> list[StatementLine]:
        docs = await self.entries.find({"account": account_id, "booked_ms": {"$gte": start_ms, "$lt": end_ms}},
                                       session=session).sort([("booked_ms", ASCENDING), ("_id", ASCENDING)]).to_list()
        return [StatementLine(entry_id=doc["_id"], booked_ms=doc["booked_ms"], posting_id=doc["posting_id"],
                              kind=doc["kind"], order_id=doc.get("order_id"), debit=doc["debit"],
                              credit=doc["credit"], memo=doc.get("memo", "")) for doc in docs]


class StatementRepository:
    """Closed (frozen) statements; open ones are computed from the journal on demand."""

    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["statements"]

    async def get(self, statement_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": statement_id}, session=session)

    async def add(self, doc: dict, session) -> None:
        await insert_or_conflict(self.collection, doc, session)

    async def page(self, *, accounts: list[str] | None, granularity: str | None, after: str | None,
                   limit: int) -> list[dict]:
        query: dict = {}
        if accounts is not None:
            query["account"] = {"$in": accounts}
        if granularity:
            query["granularity"] = granularity
        if after:
            query["_id"] = {"$gt": after}
        return await self.collection.find(query).sort("_id", ASCENDING).limit(limit).to_list()


class PaymentRepository:
    """Payments captured according to orders' events (what the provider's file must match)."""

    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["payments"]

    async def record_if_absent(self, doc: dict, session) -> bool:
        if await self.collection.find_one({"_id": doc["_id"]}, session=session) is not None:
            return False
        await insert_or_conflict(self.collection, doc, session)
        return True

    @staticmethod
    def _captured(doc: dict) -> CapturedPayment:
        return CapturedPayment(payment_id=doc["_id"], order_id=doc["order_id"], provider=doc["provider"],
                               amount=doc["amount"], fee=doc.get("fee"), captured_at=doc["captured_at"])

    async def by_ids(self, payment_ids: list[str]) -> dict[str, CapturedPayment]:
        docs = await self.collection.find({"_id": {"$in": payment_ids}}).to_list() if payment_ids else []
        return {doc["_id"]: self._captured(doc) for doc in docs}

    async def captured_between(self, start_ms: int, end_ms: int, provider: str | None) -> dict[str, CapturedPayment]:
        query: dict = {"captured_ms": {"$gte": start_ms, "$lt": end_ms}}
        if provider:
            query["provider"] = provider
        docs = await self.collection.find(query).to_list()
        return {doc["_id"]: self._captured(doc) for doc in docs}


class PayoutRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["payout_batches"]

    async def get(self, batch_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": batch_id}, session=session)

    async def for_period(self, granularity: str, start_ms: int, session=None) -> dict | None:
        return await self.collection.find_one({"granularity": granularity, "start_ms": start_ms}, session=session)

    async def add(self, doc: dict, session) -> None:
        await insert_or_conflict(self.collection, {**doc, "version": 1}, session)

    async def save(self, doc: dict, session) -> dict:
        return await replace_versioned(self.collection, doc, session)

    async def page(self, after: str | None, limit: int) -> list[dict]:
        query = {"_id": {"$gt": after}} if after else {}
        return await self.collection.find(query).sort("_id", ASCENDING).limit(limit).to_list()


class ReconciliationRepository:
    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["reconciliations"]

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one(doc, session=session)

    async def get(self, report_id: str) -> dict | None:
        return await self.collection.find_one({"_id": report_id})

    async def page(self, after: str | None, limit: int) -> list[dict]:
        query = {"_id": {"$gt": after}} if after else {}
        return await self.collection.find(query).sort(
            "_id", ASCENDING).limit(limit).to_list()


class ReturnRepository:
    """Returns received at stores, kept for information next to the refund postings."""

    def __init__(self, mongo: Mongo) -> None:
        self.collection = mongo.db["returns_received"]

    async def record_if_absent(self, doc: dict, session) -> None:
        if await self.collection.find_one({"_id": doc["_id"]}, session=session) is None:
            await insert_or_conflict(self.collection, doc, session)

    async def of_order(self, order_id: str) -> list[dict]:
        return await self.collection.find({"order_id": order_id}).to_list()
