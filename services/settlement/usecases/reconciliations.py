"""Reconciliation (对账): the payment provider's settlement file against the payments captured from orders."""
from __future__ import annotations

from datetime import datetime

from aiohttp import web

from libs.clock import to_ms, utcnow
from libs.ids import new_id
from libs.mongo import Mongo
from libs.pagination import decode_cursor, page_of
from libs.refusal import BAD_REQUEST, INVALID, Refusal
from services.settlement import metrics
from services.settlement.domain.reconciliation import ProviderRow, parse_provider_csv, reconcile
from services.settlement.repository import PaymentRepository, ReconciliationRepository
from services.settlement.usecases.access import not_found

REPORTS_PER_PAGE = 50
SCOPE = "settlement.reconciliations"


def provider_rows(raw: bytes) -> list[ProviderRow]:
    """The rows of the provider's file (CSV: payment_id,amount,fee,settled_at)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal("bad-encoding", "the settlement file must be UTF-8 text", kind=BAD_REQUEST) from None
    return parse_provider_csv(text)


class Reconciliations:
    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.payments = PaymentRepository(mongo)
        self.reports = ReconciliationRepository(mongo)

    async def create(self, raw: bytes, captured_from: datetime, captured_to: datetime, provider: str | None,
                     created_by: str) -> dict:
        """The stored report of a provider file: every payment captured in the window must be in it, every row
        in it must be a captured payment (captured at any time), with the same amount (and fee, when known)."""
        if captured_from >= captured_to:
            raise Refusal("invalid-window", "captured_from must be before captured_to", kind=INVALID)
        rows = provider_rows(raw)

        async def unit(session) -> dict:
            expected = await self.payments.captured_between(to_ms(captured_from), to_ms(captured_to), provider,
                                                            session)
            known = {**await self.payments.by_ids([row.payment_id for row in rows], session), **expected}
            result = reconcile(rows, known, expected.keys())
            created = utcnow()
            report = {"_id": new_id("rec"), "status": "clean" if result.clean else "discrepancies",
                      "captured_from": captured_from, "captured_to": captured_to, "provider": provider,
                      "rows": len(rows), "expected": len(expected), "matched": len(result.matched),
                      "missing": list(result.missing), "extra": list(result.extra),
                      "mismatched": list(result.mismatched), "created_at": created, "created_ms": to_ms(created),
                      "created_by": created_by}
            await self.reports.add(report, session)
            self.mongo.after_commit(lambda: _observe(report))
            return report

        return await self.mongo.transaction(unit)

    async def page(self, cursor: str | None) -> dict:
        docs = await self.reports.page(decode_cursor(cursor, SCOPE), REPORTS_PER_PAGE + 1)
        return page_of(docs, REPORTS_PER_PAGE, scope=SCOPE)

    async def one(self, report_id: str) -> dict:
        doc = await self.reports.get(report_id)
        if doc is None:
            raise not_found("reconciliation report")
        return doc


def _observe(report: dict) -> None:
    metrics.RECONCILIATIONS.labels(report["status"]).inc()
    for kind in ("missing", "extra", "mismatched"):
        metrics.DISCREPANCIES.labels(kind).inc(len(report[kind]))


RECONCILIATIONS = web.AppKey("settlement_reconciliations", Reconciliations)
