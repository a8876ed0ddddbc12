"""Statements per period: computed from the journal while open, frozen (and announced) once closed."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from aiohttp import web

from libs.clock import rfc3339, utcnow
from libs.logging import get_logger
from libs.mongo import Mongo, refuse_duplicates
from libs.outbox import Outbox
from libs.pagination import decode_cursor, encode_cursor, page_of
from libs.principal import Principal
from libs.refusal import CONFLICT, INVALID, Refusal
from services.settlement import metrics
from services.settlement.domain import accounts
from services.settlement.domain.periods import (TODAY, Period, PeriodError, due_for_closing, local_day_of,
                                                parse_statement_id, period_of, statement_id)
from services.settlement.domain.statements import Statement, build_statement, readable_accounts
from services.settlement.events import StatementClosed
from services.settlement.repository import JournalRepository, StatementRepository
from services.settlement.schemas import closed_summary
from services.settlement.settings import SettlementSettings
from services.settlement.usecases.access import not_found, readable

log = get_logger("settlement.statements")
SCHEDULED_CLOSE = "system:scheduled-close"


def ended(period: Period, why: str = "") -> Period:
    """The period, once it is over (only ended periods can be closed or paid out)."""
    if period.end > utcnow():
        raise PeriodError(f"the {period.granularity} starting {period.label} has not ended yet{why}",
                          "period-not-ended", kind=CONFLICT, period_end=rfc3339(period.end))
    return period


class Statements:
    def __init__(self, mongo: Mongo, outbox: Outbox, settings: SettlementSettings) -> None:
        self.mongo, self.outbox, self.settings = mongo, outbox, settings
        self.journal, self.statements = JournalRepository(mongo), StatementRepository(mongo)
        self.zone = settings.business_time_zone  # statement periods follow the business's local calendar

    def business_day(self, day: date | str) -> date:
        """A `date` parameter as a local calendar day: `today` is the current business day in the zone."""
        return local_day_of(utcnow(), self.zone) if day == TODAY else day

    def period(self, granularity: str, day: date | str) -> Period:
        return period_of(granularity, self.business_day(day), self.zone)

    async def compute(self, account: str, period: Period, session=None) -> Statement:
        closed = await self.statements.get(statement_id(account, period), session)
        opening = await self.journal.sum_before(account, period.start_ms, session)
        lines = await self.journal.lines_between(account, period.start_ms, period.end_ms, session)
        return build_statement(account, period, opening, lines, "closed" if closed else "open")

    # -- reads -----------------------------------------------------------------------------------
    async def one(self, principal: Principal, sid: str) -> Statement:
        """A statement the caller may read (open or closed); anything else is not found."""
        account, period = parse_statement_id(sid, self.zone)
        if not readable(principal, account):
            raise not_found("statement")

        async def read() -> Statement | None:
            if await self.journal.account(account) is None:
                return None
            return await self.compute(account, period)

        statement = await self.mongo.read_committed(read)
        if statement is None:
            raise not_found("statement")
        return statement

    async def listing(self, principal: Principal, *, account: str | None, granularity: str | None,
                      day: date | None, cursor: str | None, limit: int) -> dict:
        """With `day`: every visible account's statement of that period (open or closed); without: closed ones."""
        visible = readable_accounts(principal.roles, principal.franchisee_id, principal.store_ids)
        if account is not None:
            if visible is not None and account not in visible:
                return {"items": [], "next_cursor": None}
            visible = [account]
        if day is None:
            scope = "settlement.statements"
            docs = await self.statements.closed(accounts=visible, granularity=granularity,
                                                after=decode_cursor(cursor, scope), limit=limit + 1)
            return page_of(docs, limit, scope=scope, view=closed_summary)
        scope = "settlement.period-statements"
        after = decode_cursor(cursor, scope)
        period = self.period(granularity or "day", day)

        async def read() -> dict:
            known = [doc["_id"] for doc in await self.journal.all_accounts()]
            wanted = [name for name in known
                      if (visible is None or name in visible) and (after is None or name > after)]
            chosen = wanted[:limit]
            return {"items": [(await self.compute(name, period)).summary() for name in chosen],
                    "next_cursor": encode_cursor(chosen[-1], scope) if len(wanted) > limit else None}

        return await self.mongo.read_committed(read)

    # -- closing ---------------------------------------------------------------------------------
    async def close(self, granularity: str, day: date, account: str | None, closed_by: str
                    ) -> tuple[Period, list[dict], list[dict]]:
        """Freeze the period's statements (one account, or every account); returns (period, new, existing)."""
        if account is not None and not accounts.is_valid(account):
            raise Refusal("invalid-account", f"{account!r} is not an account name", kind=INVALID)
        period = ended(self.period(granularity, day), "; only ended periods can be closed")
        return await self.mongo.transaction(lambda session: self._close(session, period, account, closed_by))

    async def close_due(self, now: datetime) -> None:
        """Close yesterday, last week and last month once they have been over for the grace period. Closing is
        idempotent (statements already frozen are kept), so running it again only adds accounts opened since."""
        grace = timedelta(hours=self.settings.auto_close_grace_hours)
        for period in due_for_closing(now, grace, self.zone):
            _, closed, _ = await self.mongo.transaction(
                lambda session, period=period: self._close(session, period, None, SCHEDULED_CLOSE))
            if closed:
                log.info("settlement.period_closed", granularity=period.granularity, period=str(period.label),
                         statements=len(closed))

    async def _close(self, session, period: Period, account: str | None, closed_by: str
                     ) -> tuple[Period, list[dict], list[dict]]:
        if account is not None:
            doc = await self.journal.account(account, session)
            if doc is None:
                raise not_found("account")
            account_docs = [doc]
        else:
            account_docs = await self.journal.all_accounts(session)
        closed, existing = [], []
        for doc in account_docs:
            already = await self.statements.get(statement_id(doc["_id"], period), session)
            if already is not None:
                existing.append(already)
            else:
                closed.append(await self._freeze(session, doc, period, closed_by))
        count = len(closed)
        self.mongo.after_commit(lambda: metrics.STATEMENTS_CLOSED.labels(period.granularity).inc(count))
        return period, closed, existing

    async def _freeze(self, session, doc: dict, period: Period, closed_by: str) -> dict:
        """One account's statement of the period, frozen and announced (statement.closed)."""
        sid = statement_id(doc["_id"], period)
        frozen = await self.compute(doc["_id"], period, session)
        kind, party_id = accounts.party_of(doc["_id"])
        franchisee_id = doc.get("franchisee_id")
        store_id = party_id if kind == "store" else None
        figures = {"opening": frozen.opening, "total_credits": frozen.total_credits,
                   "total_debits": frozen.total_debits, "closing": frozen.closing, "entry_count": len(frozen.lines)}
        record = {"_id": sid, "account": doc["_id"], "party_kind": kind, "party_id": party_id,
                  "franchisee_id": franchisee_id, "store_id": store_id, "granularity": period.granularity,
                  "period_start": period.start, "period_end": period.end, "time_zone": period.time_zone,
                  "local_date": period.label.isoformat(), "start_ms": period.start_ms,
                  "end_ms": period.end_ms, **figures, "status": "closed", "closed_at": utcnow(),
                  "closed_by": closed_by}
        with refuse_duplicates("period-closing", "this statement is being closed by another request; read it"):
            await self.statements.add(record, session)
        await self.journal.freeze(doc, period.end_ms, session)
        await self.outbox.record(session, StatementClosed(
            statement_id=sid, account=doc["_id"], party_kind=kind, party_id=party_id, franchisee_id=franchisee_id,
            store_id=store_id, granularity=period.granularity, period_start=period.start, period_end=period.end,
            net_amount=frozen.closing, **figures), subject=sid)
        return record


STATEMENTS = web.AppKey("settlement_statements", Statements)
