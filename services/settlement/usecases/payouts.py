"""Payout batches: for a closed period, pay every store, franchisee and shop assistant what it is owed."""
from __future__ import annotations

from datetime import date

from aiohttp import web

from libs.clock import utcnow
from libs.mongo import Mongo, refuse_duplicates
from libs.pagination import decode_cursor, page_of
from libs.principal import Principal
from services.settlement import metrics
from services.settlement.domain import accounts
from services.settlement.domain.journal import CAPTURE, PAYOUT, REFUND, SALE, payout_entries, posting_key
from services.settlement.domain.payouts import (CANCELLED, PAID, PENDING, PayoutError, check_transition,
                                                is_payable_account, payable_amount)
from services.settlement.domain.periods import Period, statement_id
from services.settlement.repository import JournalRepository, PayoutRepository, StatementRepository
from services.settlement.usecases.access import not_found, readable
from services.settlement.usecases.journal import Journal
from services.settlement.usecases.statements import Statements, ended

EARNING_KINDS = [CAPTURE, SALE, REFUND]
BATCHES_PER_PAGE = 50
SCOPE = "settlement.payouts"


def seen_by(principal: Principal, batch: dict) -> dict | None:
    """The batch as the caller may see it: all of it for HQ, only their own lines for a party."""
    if principal.is_admin:
        return batch
    mine = [item for item in batch["items"] if readable(principal, item["account"])]
    if not mine:
        return None
    return {**batch, "items": mine, "total": sum(item["amount"] for item in mine)}


class Payouts:
    def __init__(self, mongo: Mongo, journal: Journal, statements: Statements) -> None:
        self.mongo, self.journal, self.periods = mongo, journal, statements
        self.accounts, self.statements = JournalRepository(mongo), StatementRepository(mongo)
        self.payouts = PayoutRepository(mongo)

    # -- reads -----------------------------------------------------------------------------------
    async def page(self, principal: Principal, cursor: str | None) -> dict:
        docs = await self.payouts.page(decode_cursor(cursor, SCOPE), BATCHES_PER_PAGE + 1)
        page = page_of(docs, BATCHES_PER_PAGE, scope=SCOPE, view=lambda doc: seen_by(principal, doc))
        return {**page, "items": [batch for batch in page["items"] if batch is not None]}

    async def one(self, principal: Principal, batch_id: str) -> dict:
        batch = await self.payouts.get(batch_id)
        seen = seen_by(principal, batch) if batch else None
        if seen is None:
            raise not_found("payout batch")
        return seen

    # -- changes ---------------------------------------------------------------------------------
    async def create(self, granularity: str, day: date, created_by: str) -> dict:
        period = ended(self.periods.period(granularity, day))
        return await self.mongo.transaction(lambda session: self._create(session, period, created_by))

    async def _create(self, session, period: Period, created_by: str) -> dict:
        granularity = period.granularity
        existing = await self.payouts.for_period(granularity, period.start_ms, session)
        if existing is not None:
            raise _batch_exists(period, existing["_id"])
        items = await self._payable_items(session, period)
        for item in items:
            await self.accounts.add_committed_payout(item["account"], item["amount"], session)
        batch_id = f"pob_{granularity}_{period.label:%Y%m%d}"
        batch = {"_id": batch_id, "granularity": granularity,
                 "period_start": period.start, "period_end": period.end, "start_ms": period.start_ms,
                 "end_ms": period.end_ms, "status": PENDING, "items": items,
                 "total": sum(item["amount"] for item in items), "created_at": utcnow(), "created_by": created_by}
        # Two requests for the same period at once: the unique index decides, the loser is told as above.
        with refuse_duplicates("payout-batch-exists", _batch_exists(period, batch_id).detail, batch_id=batch_id):
            await self.payouts.save(batch, session, new=True)

        def observe() -> None:
            metrics.PAYOUT_BATCHES.labels(PENDING).inc()
            for item in items:
                metrics.PAYOUT_FEN.labels(item["party_kind"]).inc(item["amount"])
        self.mongo.after_commit(observe)
        return {**batch, "version": 1}

    async def _payable_items(self, session, period: Period) -> list[dict]:
        """What every payable account is owed through the period's end; refused while any has no closed statement."""
        items, not_closed = [], []
        for doc in await self.accounts.all_accounts(session, kinds=accounts.PAYABLE_KINDS):
            if not is_payable_account(doc["_id"]):
                continue
            earned = await self.accounts.sum_before(doc["_id"], period.end_ms, session, kinds=EARNING_KINDS)
            amount = payable_amount(earned, doc.get("committed_payouts", 0))
            if amount <= 0:
                continue
            if await self.statements.get(statement_id(doc["_id"], period), session) is None:
                not_closed.append(doc["_id"])
                continue
            kind, party_id = accounts.party_of(doc["_id"])
            items.append({"account": doc["_id"], "party_kind": kind, "party_id": party_id,
                          "franchisee_id": doc.get("franchisee_id"), "amount": amount,
                          "statement_id": statement_id(doc["_id"], period)})
        if not_closed:
            raise PayoutError("period-not-closed", f"close the {period.granularity} starting {period.label} first: "
                              f"{len(not_closed)} account(s) with money owed have no closed statement",
                              accounts=not_closed)
        return items

    async def change_status(self, batch_id: str, target: str, actor: str) -> dict:
        return await self.mongo.transaction(lambda session: self._change_status(session, batch_id, target, actor))

    async def _change_status(self, session, batch_id: str, target: str, actor: str) -> dict:
        batch = await self.payouts.get(batch_id, session)
        if batch is None:
            raise not_found("payout batch")
        if batch["status"] == target:
            return batch  # repeating the same transition changes nothing
        check_transition(batch["status"], target)
        if target == PAID:
            key = posting_key(batch_id, PAYOUT)
            if not await self.journal.already_posted(key, PAYOUT, session):
                amounts = {item["account"]: item["amount"] for item in batch["items"]}
                await self.journal.post(session, key=key, kind=PAYOUT, order_id=None, source=None,
                                        entries=payout_entries(amounts), occurred_at=utcnow(),
                                        memo=f"payout {batch_id}", details={"batch_id": batch_id})
        elif target == CANCELLED:
            for item in batch["items"]:
                await self.accounts.add_committed_payout(item["account"], -item["amount"], session)
        saved = await self.payouts.save({**batch, "status": target, f"{target}_at": utcnow(),
                                         f"{target}_by": actor}, session)
        self.mongo.after_commit(lambda: metrics.PAYOUT_BATCHES.labels(target).inc())
        return saved


def _batch_exists(period: Period, batch_id: str) -> PayoutError:
    return PayoutError("payout-batch-exists", f"the {period.granularity} starting {period.label} already has "
                       f"payout batch {batch_id}", batch_id=batch_id)


PAYOUTS = web.AppKey("settlement_payouts", Payouts)
