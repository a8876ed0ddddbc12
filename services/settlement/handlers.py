"""HTTP entrypoints of settlement: thin, they check the caller's role, parse, call one use case, answer.

Who sees what is the use cases' business (see usecases/access.py): anything not the caller's is a 404.
"""
from __future__ import annotations

from aiohttp import web

from libs.auth import require
from libs.http import json_response, parse_body, parse_query
from libs.idempotency import create_once
from libs.openapi import openapi
from libs.service import MONGO
from services.settlement.domain.payouts import CANCELLED, PAID
from services.settlement.domain.statements import to_csv
from services.settlement.schemas import (AccountOut, AccountPage, ClosePeriod, CloseResult, NewPayoutBatch,
                                         NewSplitRule, PageQuery, PayoutBatchOut, PayoutPage, ReconciliationOut,
                                         ReconciliationPage, ReconciliationWindow, SplitRuleOut, SplitRulePage,
                                         StatementOut, StatementPage, StatementQuery, StatementSummary, closed_summary,
                                         free_form, shaped, shaped_page)
from services.settlement.usecases import JOURNAL, PAYOUTS, RECONCILIATIONS, SPLIT_RULES, STATEMENTS

routes = web.RouteTableDef()
READERS = ("franchisee", "store_manager", "hq_admin")
TAGS = ["settlement"]


def _cursor(request: web.Request) -> str | None:
    return parse_query(request, PageQuery).cursor


# -- split rules ----------------------------------------------------------------------------------
@routes.get("/settlement/split-rules")
@openapi(summary="Split rule versions, oldest first", response=SplitRulePage, tags=TAGS)
async def list_split_rules(request: web.Request) -> web.Response:
    require(request, *READERS)
    return json_response(shaped_page(SplitRuleOut, await request.app[SPLIT_RULES].all()))


@routes.get("/settlement/split-rules/{version}")
@openapi(summary="One split rule version", response=SplitRuleOut, tags=TAGS)
async def get_split_rule(request: web.Request) -> web.Response:
    require(request, *READERS)
    return json_response(shaped(SplitRuleOut, await request.app[SPLIT_RULES].get(request.match_info["version"])))


@routes.post("/settlement/split-rules")
@openapi(summary="New split rule version (HQ); omitted fields keep the latest version's values",
         request=NewSplitRule, response=SplitRuleOut, status=201, tags=TAGS)
async def create_split_rule(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, NewSplitRule)

    async def create() -> tuple[int, dict]:
        rule = await request.app[SPLIT_RULES].create(body.effective_from, body.model_dump(exclude_none=True),
                                                     principal.subject)
        return 201, shaped(SplitRuleOut, rule)

    return await create_once(request.app[MONGO], request, create)


# -- statements -----------------------------------------------------------------------------------
@routes.get("/settlement/statements")
@openapi(summary="Statements: of one period for every visible account (`date`), else the closed ones",
         query=StatementQuery, response=StatementPage, tags=TAGS)
async def list_statements(request: web.Request) -> web.Response:
    """With `date`: every visible account's statement of that period (open or closed); without: closed ones."""
    principal = require(request, *READERS)
    query = parse_query(request, StatementQuery)
    page = await request.app[STATEMENTS].listing(principal, account=query.account, granularity=query.granularity,
                                                 day=query.date, cursor=query.cursor, limit=query.limit)
    return json_response(shaped_page(StatementSummary, page))


@routes.get("/settlement/statements/{statement_id}")
@openapi(summary="A statement with its entries (`?format=csv` or `Accept: text/csv` for CSV)",
         response=StatementOut, tags=TAGS)
async def get_statement(request: web.Request) -> web.Response:
    principal = require(request, *READERS)
    statement = await request.app[STATEMENTS].one(principal, request.match_info["statement_id"])
    if request.query.get("format") == "csv" or "text/csv" in request.headers.get("Accept", ""):
        return web.Response(text=to_csv(statement), content_type="text/csv", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="{statement.id.replace(":", "-")}.csv"'})
    return json_response(shaped(StatementOut, statement.to_dict()))


@routes.post("/settlement/statements/close")
@openapi(summary="Close an ended period (HQ): freeze its statements and announce them",
         request=ClosePeriod, responses={201: CloseResult, 200: CloseResult}, tags=TAGS)
async def close_statements(request: web.Request) -> web.Response:
    """Freeze a period that has ended, for one account or all; each new statement emits statement.closed."""
    principal = require(request, "hq_admin")
    body = await parse_body(request, ClosePeriod)

    async def create() -> tuple[int, dict]:
        period, closed, existing = await request.app[STATEMENTS].close(body.granularity, body.date, body.account,
                                                                       principal.subject)
        return 201 if closed else 200, shaped(CloseResult, {
            "granularity": body.granularity, "period_start": period.start, "period_end": period.end,
            "closed": [closed_summary(doc) for doc in closed],
            "already_closed": [closed_summary(doc) for doc in existing]})

    return await create_once(request.app[MONGO], request, create)


# -- accounts and postings ------------------------------------------------------------------------
@routes.get("/settlement/accounts")
@openapi(summary="Accounts the caller may see, with their balances", response=AccountPage, tags=TAGS)
async def list_accounts(request: web.Request) -> web.Response:
    principal = require(request, *READERS)
    return json_response(shaped_page(AccountOut, await request.app[JOURNAL].accounts_for(principal)))


@routes.get("/settlement/orders/{order_id}/postings")
@openapi(summary="The journal postings of one order (HQ)", tags=TAGS)
async def order_postings(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    return json_response(free_form(await request.app[JOURNAL].postings_of_order(request.match_info["order_id"])))


@routes.get("/settlement/refund-anomalies")
@openapi(summary="Refunds that did not match their sale (units never sold, an amount unlike the shares), for "
                 "finance's review (HQ)", query=PageQuery, tags=TAGS)
async def refund_anomalies(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    return json_response(free_form(await request.app[JOURNAL].refund_anomalies(_cursor(request))))


# -- payouts --------------------------------------------------------------------------------------
@routes.post("/settlement/payouts")
@openapi(summary="Payout batch for a closed period (HQ)", request=NewPayoutBatch, response=PayoutBatchOut,
         status=201, tags=TAGS)
async def create_payout_batch(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, NewPayoutBatch)

    async def create() -> tuple[int, dict]:
        batch = await request.app[PAYOUTS].create(body.granularity, body.date, principal.subject)
        return 201, shaped(PayoutBatchOut, batch)

    return await create_once(request.app[MONGO], request, create)


@routes.get("/settlement/payouts")
@openapi(summary="Payout batches (a party sees only its own lines)", query=PageQuery, response=PayoutPage,
         tags=TAGS)
async def list_payouts(request: web.Request) -> web.Response:
    principal = require(request, *READERS)
    return json_response(shaped_page(PayoutBatchOut, await request.app[PAYOUTS].page(principal, _cursor(request))))


@routes.get("/settlement/payouts/{batch_id}")
@openapi(summary="One payout batch (a party sees only its own lines)", response=PayoutBatchOut, tags=TAGS)
async def get_payout(request: web.Request) -> web.Response:
    principal = require(request, *READERS)
    batch = await request.app[PAYOUTS].one(principal, request.match_info["batch_id"])
    return json_response(shaped(PayoutBatchOut, batch))


async def _transition(request: web.Request, target: str) -> web.Response:
    principal = require(request, "hq_admin")
    batch = await request.app[PAYOUTS].change_status(request.match_info["batch_id"], target, principal.subject)
    return json_response(shaped(PayoutBatchOut, batch))


@routes.post("/settlement/payouts/{batch_id}/paid")
@openapi(summary="Mark a pending batch paid (HQ): posts the payout to the journal", response=PayoutBatchOut,
         tags=TAGS)
async def mark_payout_paid(request: web.Request) -> web.Response:
    return await _transition(request, PAID)


@routes.post("/settlement/payouts/{batch_id}/cancel")
@openapi(summary="Cancel a pending batch (HQ): its amounts become payable again", response=PayoutBatchOut,
         tags=TAGS)
async def cancel_payout(request: web.Request) -> web.Response:
    return await _transition(request, CANCELLED)


# -- reconciliation -------------------------------------------------------------------------------
@routes.post("/settlement/reconciliations")
@openapi(summary="Reconcile the provider's settlement file (text/csv body) against captured payments (HQ)",
         query=ReconciliationWindow, response=ReconciliationOut, status=201, tags=TAGS)
async def create_reconciliation(request: web.Request) -> web.Response:
    """Body: the provider's settlement file (CSV: payment_id,amount,fee,settled_at). The query names the
    capture window the file covers: every payment captured in it must appear in the file."""
    principal = require(request, "hq_admin")
    window = parse_query(request, ReconciliationWindow)
    raw = await request.read()

    async def create() -> tuple[int, dict]:
        report = await request.app[RECONCILIATIONS].create(raw, window.captured_from, window.captured_to,
                                                           window.provider, principal.subject)
        return 201, shaped(ReconciliationOut, report)

    return await create_once(request.app[MONGO], request, create)


@routes.get("/settlement/reconciliations")
@openapi(summary="Reconciliation reports (HQ)", query=PageQuery, response=ReconciliationPage, tags=TAGS)
async def list_reconciliations(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    return json_response(shaped_page(ReconciliationOut, await request.app[RECONCILIATIONS].page(_cursor(request))))


@routes.get("/settlement/reconciliations/{report_id}")
@openapi(summary="One reconciliation report (HQ)", response=ReconciliationOut, tags=TAGS)
async def get_reconciliation(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    report = await request.app[RECONCILIATIONS].one(request.match_info["report_id"])
    return json_response(shaped(ReconciliationOut, report))
