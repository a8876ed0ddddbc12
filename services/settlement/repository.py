"""Mongo repositories of settlement, one per aggregate. Every write takes the caller's transaction session.

Journal documents (postings, entries) are only ever inserted: corrections are new postings. Account
documents carry maintained figures (balance, freeze boundary, amount already batched for payout) that the
journal and the statement closing both update, so concurrent writers of one account conflict and retry.
"""
from __future__ import annotations

from collections.abc import Iterable

from pymongo import ASCENDING, DESCENDING

from libs.clock import utcnow
from libs.ids import new_id
from libs.mongo import ConcurrencyConflict, IndexSpec, Mongo, insert_versioned, replace_versioned
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


async def _page(collection, query: dict, after: str | None, limit: int) -> list[dict]:
    """One page in `_id` order (ids are time-ordered), after the last `_id` of the previous page."""
    if after:
        query = {**query, "_id": {"$gt": after}}
    return await collection.find(query).sort("_id", ASCENDING).limit(limit).to_list()


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
        doc = {"_id": f"spr_v{rule.version}", **rule.to_dict(), "created_at": utcnow(), "created_by": created_by}
        await self.collection.insert_one(doc, session=session)  # the version is unique: a lost race is refused
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
        self.postings, self.entries, self.accounts = (mongo.db[name] for name in ("postings", "entries", "accounts"))

    async def posting_by_key(self, key: str, session=None) -> dict | None:
        return await self.postings.find_one({"key": key}, session=session)

    async def postings_of_order(self, order_id: str, kind: str | None = None, session=None) -> list[dict]:
        query = {"order_id": order_id, **({"kind": kind} if kind else {})}
        return await self.postings.find(query, session=session).sort("booked_ms", ASCENDING).to_list()

    async def anomalies(self, after: str | None, limit: int) -> list[dict]:
        return await _page(self.postings, {"anomaly": True}, after, limit)

    async def frozen_until(self, account_ids: Iterable[str], session) -> int:
        docs = await self.accounts.find({"_id": {"$in": list(account_ids)}}, {"frozen_until_ms": 1},
                                        session=session).to_list()
        return max([doc.get("frozen_until_ms", 0) for doc in docs] or [0])

    async def insert(self, posting: dict, entries: tuple[Entry, ...], session,
                     franchisee_of: dict[str, str | None]) -> list[dict]:
        """Write the posting, its entries, and each account's balance (the account is opened on first use).

        A DuplicateKeyError on the posting key means a concurrent writer posted it first: the event is delivered
        again and then finds the posting."""
        await self.postings.insert_one(posting, session=session)
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


class _Documents:
    """One collection of whole documents by `_id`: what the small repositories below have in common."""

    name = ""

    def __init__(self, mongo: Mongo, name: str | None = None) -> None:
        self.collection = mongo.db[name or self.name]

    async def page(self, after: str | None, limit: int, query: dict | None = None) -> list[dict]:
        return await _page(self.collection, query or {}, after, limit)

    async def get(self, doc_id: str, session=None) -> dict | None:
        return await self.collection.find_one({"_id": doc_id}, session=session)

    async def add(self, doc: dict, session) -> None:
        await self.collection.insert_one(doc, session=session)

    async def record_if_absent(self, doc: dict, session) -> bool:
        """Insert unless it is there (a redelivered event records nothing twice)."""
        if await self.get(doc["_id"], session) is not None:
            return False
        await self.add(doc, session)
        return True


class StatementRepository(_Documents):
    """Closed (frozen) statements; open ones are computed from the journal on demand."""

    name = "statements"

    async def closed(self, *, accounts: list[str] | None, granularity: str | None, after: str | None,
                     limit: int) -> list[dict]:
        query: dict = {"account": {"$in": accounts}} if accounts is not None else {}
        if granularity:
            query["granularity"] = granularity
        return await self.page(after, limit, query)


class PaymentRepository(_Documents):
    """Payments captured according to orders' events (what the provider's file must match)."""

    name = "payments"

    @staticmethod
    def _captured(doc: dict) -> CapturedPayment:
        return CapturedPayment(payment_id=doc["_id"], order_id=doc["order_id"], provider=doc["provider"],
                               amount=doc["amount"], fee=doc.get("fee"), captured_at=doc["captured_at"])

    async def by_ids(self, payment_ids: list[str], session=None) -> dict[str, CapturedPayment]:
        docs = await self.collection.find({"_id": {"$in": payment_ids}}, session=session).to_list() \
            if payment_ids else []
        return {doc["_id"]: self._captured(doc) for doc in docs}

    async def captured_between(self, start_ms: int, end_ms: int, provider: str | None,
                               session=None) -> dict[str, CapturedPayment]:
        query: dict = {"captured_ms": {"$gte": start_ms, "$lt": end_ms}}
        if provider:
            query["provider"] = provider
        docs = await self.collection.find(query, session=session).to_list()
        return {doc["_id"]: self._captured(doc) for doc in docs}


class PayoutRepository(_Documents):
    name = "payout_batches"

    async def for_period(self, granularity: str, start_ms: int, session=None) -> dict | None:
        return await self.collection.find_one({"granularity": granularity, "start_ms": start_ms}, session=session)

    async def save(self, doc: dict, session, *, new: bool = False) -> dict:
        """A new batch at version 1, else the batch changed, with the optimistic version check."""
        return await (insert_versioned if new else replace_versioned)(self.collection, doc, session)


class ReconciliationRepository(_Documents):
    name = "reconciliations"


class ReturnRepository(_Documents):
    """Returns received at stores, kept for information next to the refund postings."""

    name = "returns_received"
