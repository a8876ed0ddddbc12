"""HTTP entrypoints: thin, they check the caller, parse, call the ledger/domain and the repository, answer.

Who sees what: hq_admin (and service tokens) everything; a franchisee only its own account's statements
and payout lines; a store manager only its own stores'. Anything not theirs is answered 404, as if absent.
"""
from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from datetime import date as CalendarDate
from typing import Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from libs.auth import Principal, require
from libs.http import SETTINGS, json_response, parse_body, parse_query
from libs.idempotency import guarded
from libs.openapi import openapi
from libs.problems import Problem, not_found
from libs.service import MONGO
from services.settlement.api_models import (AccountOut, AccountPage, CloseResult, PayoutBatchOut, PayoutPage,
                                            ReconciliationOut, ReconciliationPage, SplitRuleOut, SplitRulePage,
                                            StatementOut, StatementPage, StatementSummary)
from services.settlement.domain import accounts
from services.settlement.domain.payouts import CANCELLED, PAID, PayoutError
from services.settlement.domain.periods import PeriodError, parse_statement_id, period_of
from services.settlement.domain.reconciliation import ReconciliationFileError, parse_provider_csv
from services.settlement.domain.rules import RuleError, next_version
from services.settlement.domain.statements import can_read, readable_accounts, to_csv
from services.settlement.ledger import Ledger
from services.settlement.repository import (JournalRepository, PayoutRepository, ReconciliationRepository,
                                            SplitRuleRepository, StatementRepository, now_utc)

routes = web.RouteTableDef()
READERS = ("franchisee", "store_manager", "hq_admin")
Granularity = Literal["day", "week", "month"]
# A new rule may start "now": allow for the client's clock being a little behind ours.
BACKDATE_TOLERANCE = timedelta(minutes=1)


# -- presentation ---------------------------------------------------------------------------------
def shaped(model, doc) -> dict:
    """A stored document (or domain dict) as the documented answer: RFC 3339 times, `id` for `_id`."""
    return model.model_validate(doc).model_dump(mode="json")


def page_of(model, docs: list, next_cursor: str | None) -> dict:
    return {"items": [shaped(model, doc) for doc in docs], "next_cursor": next_cursor}


def closed_summary(doc: dict) -> dict:
    """A frozen statement's stored header in the same shape as a computed statement's summary."""
    return {**doc, "id": doc["_id"], "party": {"kind": doc["party_kind"], "id": doc["party_id"]}}


def free_form(value):
    """Postings (free-form documents): datetimes as UTC RFC 3339, `id` for `_id`."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {("id" if key == "_id" else key): free_form(item) for key, item in value.items() if key != "booked_ms"}
    if isinstance(value, list | tuple):
        return [free_form(item) for item in value]
    return value


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        decoded = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        decoded = ""
    if not decoded:
        raise Problem(400, "bad-cursor", "the cursor is not one this service gave out")
    return decoded


def _readable(principal: Principal, account: str) -> bool:
    return can_read(account, roles=principal.roles, franchisee_id=principal.franchisee_id,
                    store_ids=principal.store_ids)


def _offset(request: web.Request) -> int:
    return request.app[SETTINGS].period_utc_offset_minutes


# -- split rules ----------------------------------------------------------------------------------
class FeeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["percent", "fixed"]
    bps: int = Field(0, ge=0, le=10_000)
    amount: int = Field(0, ge=0, le=10_000_000)


class NewSplitRule(BaseModel):
    """A new version; fields left out keep the values of the latest version."""
    model_config = ConfigDict(extra="forbid")
    effective_from: AwareDatetime
    ship_from_store_fee: FeeIn | None = None
    pickup_handling_fee: FeeIn | None = None
    in_store_fee: FeeIn | None = None
    staff_commission_bps: int | None = Field(None, ge=0, le=10_000)
    franchise_wholesale_markup_bps: int | None = Field(None, ge=0, le=100_000)
    channel_fee_bps: dict[str, int] | None = None
    payment_fee_bps: dict[str, int] | None = None
    note: str = Field("", max_length=500)


@routes.get("/settlement/split-rules")
@openapi(summary="Split rule versions, oldest first", response=SplitRulePage, tags=["settlement"])
async def list_split_rules(request: web.Request) -> web.Response:
    require(request, *READERS)
    rules = await SplitRuleRepository(request.app[MONGO]).documents()
    return json_response(page_of(SplitRuleOut, rules, None))


@routes.get("/settlement/split-rules/{version}")
@openapi(summary="One split rule version", response=SplitRuleOut, tags=["settlement"])
async def get_split_rule(request: web.Request) -> web.Response:
    require(request, *READERS)
    version = request.match_info["version"]
    if not version.isdigit():
        raise not_found("split rule")
    doc = await SplitRuleRepository(request.app[MONGO]).get(int(version))
    if doc is None:
        raise not_found("split rule")
    return json_response(shaped(SplitRuleOut, doc))


@routes.post("/settlement/split-rules")
@openapi(summary="New split rule version (HQ); omitted fields keep the latest version's values",
         request=NewSplitRule, response=SplitRuleOut, status=201, tags=["settlement"])
async def create_split_rule(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, NewSplitRule)
    if body.effective_from < now_utc() - BACKDATE_TOLERANCE:
        raise Problem(422, "rule-backdated", "effective_from is in the past: a new rule cannot change sales "
                      "that may already be settled; choose now or a later time")
    mongo = request.app[MONGO]
    repo = SplitRuleRepository(mongo)

    async def create(remember):
        async def unit(session):
            try:
                rule = next_version(await repo.latest(session), body.model_dump(exclude_none=True))
            except RuleError as exc:
                raise Problem(422, "invalid-split-rule", str(exc)) from None
            answer = shaped(SplitRuleOut, await repo.add(rule, session, created_by=principal.subject))
            await remember(session, 201, answer)
            return answer

        return 201, await mongo.transaction(unit)

    return await guarded(mongo, request, create)


# -- statements -----------------------------------------------------------------------------------
class StatementQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account: str | None = Field(None, max_length=200)
    granularity: Granularity | None = None
    date: CalendarDate | None = None
    cursor: str | None = Field(None, max_length=500)
    limit: int = Field(50, ge=1, le=200)


@routes.get("/settlement/statements")
@openapi(summary="Statements: of one period for every visible account (`date`), else the closed ones",
         query=StatementQuery, response=StatementPage, tags=["settlement"])
async def list_statements(request: web.Request) -> web.Response:
    """With `date`: every visible account's statement of that period (open or closed); without: closed ones."""
    principal = require(request, *READERS)
    query = parse_query(request, StatementQuery)
    visible = readable_accounts(principal.roles, principal.franchisee_id, principal.store_ids)
    if query.account is not None:
        if visible is not None and query.account not in visible:
            return json_response(page_of(StatementSummary, [], None))
        visible = [query.account]
    after = decode_cursor(query.cursor)
    ledger = Ledger(request.app)
    if query.date is None:
        docs = await StatementRepository(request.app[MONGO]).page(
            accounts=visible, granularity=query.granularity, after=after, limit=query.limit + 1)
        more = len(docs) > query.limit
        docs = docs[:query.limit]
        return json_response(page_of(StatementSummary, [closed_summary(doc) for doc in docs],
                                     encode_cursor(docs[-1]["_id"]) if more else None))
    period = period_of(query.granularity or "day", query.date, _offset(request))

    async def read():
        known = [doc["_id"] for doc in await ledger.journal.all_accounts()]
        wanted = [account for account in known if (visible is None or account in visible)
                  and (after is None or account > after)]
        chosen = wanted[:query.limit]
        items = [(await ledger.statement(account, period)).summary() for account in chosen]
        return items, (encode_cursor(chosen[-1]) if len(wanted) > query.limit else None)

    items, next_cursor = await request.app[MONGO].read_committed(read)
    return json_response(page_of(StatementSummary, items, next_cursor))


@routes.get("/settlement/statements/{statement_id}")
@openapi(summary="A statement with its entries (`?format=csv` or `Accept: text/csv` for CSV)",
         response=StatementOut, tags=["settlement"])
async def get_statement(request: web.Request) -> web.Response:
    principal = require(request, *READERS)
    try:
        account, period = parse_statement_id(request.match_info["statement_id"], _offset(request))
    except PeriodError:
        raise not_found("statement") from None
    if not _readable(principal, account):
        raise not_found("statement")
    ledger = Ledger(request.app)

    async def read():
        if await ledger.journal.account(account) is None:
            return None
        return await ledger.statement(account, period)

    statement = await request.app[MONGO].read_committed(read)
    if statement is None:
        raise not_found("statement")
    wants_csv = request.query.get("format") == "csv" or "text/csv" in request.headers.get("Accept", "")
    if wants_csv:
        return web.Response(text=to_csv(statement), content_type="text/csv", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="{statement.id.replace(":", "-")}.csv"'})
    return json_response(shaped(StatementOut, statement.to_dict()))


class ClosePeriod(BaseModel):
    model_config = ConfigDict(extra="forbid")
    granularity: Granularity
    date: CalendarDate
    account: str | None = Field(None, max_length=200)


@routes.post("/settlement/statements/close")
@openapi(summary="Close an ended period (HQ): freeze its statements and announce them",
         request=ClosePeriod, responses={201: CloseResult, 200: CloseResult}, tags=["settlement"])
async def close_statements(request: web.Request) -> web.Response:
    """Freeze a period that has ended, for one account or all; each new statement emits statement.closed."""
    principal = require(request, "hq_admin")
    body = await parse_body(request, ClosePeriod)
    if body.account is not None and not accounts.is_valid(body.account):
        raise Problem(422, "invalid-account", f"{body.account!r} is not an account name")
    mongo = request.app[MONGO]
    ledger = Ledger(request.app)

    async def create(remember):
        async def unit(session):
            period, closed, existing = await ledger.close_period(session, body.granularity, body.date,
                                                                  body.account, principal.subject)
            status = 201 if closed else 200
            answer = shaped(CloseResult, {"granularity": body.granularity, "period_start": period.start,
                                          "period_end": period.end,
                                          "closed": [closed_summary(doc) for doc in closed],
                                          "already_closed": [closed_summary(doc) for doc in existing]})
            await remember(session, status, answer)
            return status, answer

        return await mongo.transaction(unit)

    return await guarded(mongo, request, create)


# -- accounts and postings ------------------------------------------------------------------------
@routes.get("/settlement/accounts")
@openapi(summary="Accounts the caller may see, with their balances", response=AccountPage, tags=["settlement"])
async def list_accounts(request: web.Request) -> web.Response:
    principal = require(request, *READERS)
    docs = await JournalRepository(request.app[MONGO]).all_accounts()
    return json_response(page_of(AccountOut, [doc for doc in docs if _readable(principal, doc["_id"])], None))


@routes.get("/settlement/orders/{order_id}/postings")
@openapi(summary="The journal postings of one order (HQ)", tags=["settlement"])
async def order_postings(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    docs = await JournalRepository(request.app[MONGO]).postings_of_order(request.match_info["order_id"])
    return json_response({"items": free_form(docs), "next_cursor": None})


@routes.get("/settlement/refund-anomalies")
@openapi(summary="Refunds that did not match their sale (units never sold, an amount unlike the shares), for "
                 "finance's review (HQ)", tags=["settlement"])
async def refund_anomalies(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    docs = await JournalRepository(request.app[MONGO]).anomalies(decode_cursor(request.query.get("cursor")), 51)
    more, docs = len(docs) > 50, docs[:50]
    return json_response({"items": free_form(docs), "next_cursor": encode_cursor(docs[-1]["_id"]) if more else None})


# -- payouts --------------------------------------------------------------------------------------
class NewPayoutBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    granularity: Granularity
    date: CalendarDate


def _payout_for(principal: Principal, batch: dict) -> dict | None:
    """The batch as the caller may see it: all of it for HQ, only their own lines for a party."""
    if principal.is_admin:
        return batch
    mine = [item for item in batch["items"] if _readable(principal, item["account"])]
    if not mine:
        return None
    return {**batch, "items": mine, "total": sum(item["amount"] for item in mine)}


@routes.post("/settlement/payouts")
@openapi(summary="Payout batch for a closed period (HQ)", request=NewPayoutBatch, response=PayoutBatchOut,
         status=201, tags=["settlement"])
async def create_payout_batch(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, NewPayoutBatch)
    mongo = request.app[MONGO]
    ledger = Ledger(request.app)

    async def create(remember):
        async def unit(session):
            batch = shaped(PayoutBatchOut, await ledger.create_payout_batch(session, body.granularity, body.date,
                                                                            principal.subject))
            await remember(session, 201, batch)
            return batch

        return 201, await mongo.transaction(unit)

    return await guarded(mongo, request, create)


@routes.get("/settlement/payouts")
@openapi(summary="Payout batches (a party sees only its own lines)", response=PayoutPage, tags=["settlement"])
async def list_payouts(request: web.Request) -> web.Response:
    principal = require(request, *READERS)
    after = decode_cursor(request.query.get("cursor"))
    docs = await PayoutRepository(request.app[MONGO]).page(after, 51)
    more, docs = len(docs) > 50, docs[:50]
    visible = [seen for seen in (_payout_for(principal, doc) for doc in docs) if seen is not None]
    return json_response(page_of(PayoutBatchOut, visible, encode_cursor(docs[-1]["_id"]) if more else None))


@routes.get("/settlement/payouts/{batch_id}")
@openapi(summary="One payout batch (a party sees only its own lines)", response=PayoutBatchOut, tags=["settlement"])
async def get_payout(request: web.Request) -> web.Response:
    principal = require(request, *READERS)
    batch = await PayoutRepository(request.app[MONGO]).get(request.match_info["batch_id"])
    seen = _payout_for(principal, batch) if batch else None
    if seen is None:
        raise not_found("payout batch")
    return json_response(shaped(PayoutBatchOut, seen))


async def _transition(request: web.Request, target: str) -> web.Response:
    principal = require(request, "hq_admin")
    mongo = request.app[MONGO]
    ledger = Ledger(request.app)
    try:
        batch = await mongo.transaction(lambda session: ledger.change_payout_status(
            session, request.match_info["batch_id"], target, principal.subject))
    except PayoutError as exc:
        raise Problem(409, exc.code, exc.detail) from None
    return json_response(shaped(PayoutBatchOut, batch))


@routes.post("/settlement/payouts/{batch_id}/paid")
@openapi(summary="Mark a pending batch paid (HQ): posts the payout to the journal", response=PayoutBatchOut,
         tags=["settlement"])
async def mark_payout_paid(request: web.Request) -> web.Response:
    return await _transition(request, PAID)


@routes.post("/settlement/payouts/{batch_id}/cancel")
@openapi(summary="Cancel a pending batch (HQ): its amounts become payable again", response=PayoutBatchOut,
         tags=["settlement"])
async def cancel_payout(request: web.Request) -> web.Response:
    return await _transition(request, CANCELLED)


# -- reconciliation -------------------------------------------------------------------------------
class ReconciliationWindow(BaseModel):
    model_config = ConfigDict(extra="forbid")
    captured_from: AwareDatetime
    captured_to: AwareDatetime
    provider: str | None = Field(None, max_length=50)


@routes.post("/settlement/reconciliations")
@openapi(summary="Reconcile the provider's settlement file (text/csv body) against captured payments (HQ)",
         query=ReconciliationWindow, response=ReconciliationOut, status=201, tags=["settlement"])
async def create_reconciliation(request: web.Request) -> web.Response:
    """Body: the provider's settlement file (CSV: payment_id,amount,fee,settled_at). The query names the
    capture window the file covers: every payment captured in it must appear in the file."""
    principal = require(request, "hq_admin")
    window = parse_query(request, ReconciliationWindow)
    if window.captured_from >= window.captured_to:
        raise Problem(422, "invalid-window", "captured_from must be before captured_to")
    raw = await request.read()
    try:
        rows = parse_provider_csv(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise Problem(400, "bad-encoding", "the settlement file must be UTF-8 text") from None
    except ReconciliationFileError as exc:
        raise Problem(422, "invalid-settlement-file", exc.detail, line=exc.line) from None
    mongo = request.app[MONGO]
    ledger = Ledger(request.app)

    async def create(remember):
        report = await ledger.reconcile(rows, window.captured_from, window.captured_to, window.provider,
                                        principal.subject)
        answer = shaped(ReconciliationOut, report)

        async def unit(session):
            await ledger.store_reconciliation(session, report)
            await remember(session, 201, answer)

        await mongo.transaction(unit)
        return 201, answer

    return await guarded(mongo, request, create)


@routes.get("/settlement/reconciliations")
@openapi(summary="Reconciliation reports (HQ)", response=ReconciliationPage, tags=["settlement"])
async def list_reconciliations(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    docs = await ReconciliationRepository(request.app[MONGO]).page(decode_cursor(request.query.get("cursor")), 51)
    more, docs = len(docs) > 50, docs[:50]
    return json_response(page_of(ReconciliationOut, docs, encode_cursor(docs[-1]["_id"]) if more else None))


@routes.get("/settlement/reconciliations/{report_id}")
@openapi(summary="One reconciliation report (HQ)", response=ReconciliationOut, tags=["settlement"])
async def get_reconciliation(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    doc = await ReconciliationRepository(request.app[MONGO]).get(request.match_info["report_id"])
    if doc is None:
        raise not_found("reconciliation report")
    return json_response(shaped(ReconciliationOut, doc))
