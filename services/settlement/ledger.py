"""Settlement's use cases: turn order facts into postings, close periods, batch payouts, reconcile.

The bus consumers and the HTTP handlers stay thin and call these. Everything a use case writes happens in
the caller's transaction session (consumers) or in one `mongo.transaction` (HTTP), together with the
outbox events it produces.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime

from aiohttp import web

from libs.bus import Envelope
from libs.mongo import Mongo
from libs.problems import Problem, not_found
from libs.service import MONGO, OUTBOX
from libs.http import SETTINGS
from libs.logging import get_logger
from services.settlement import metrics
from services.settlement.domain import accounts
from services.settlement.domain.journal import (CAPTURE, PAYOUT, REFUND, SALE, Entry, capture_entries,
                                                payout_entries, posting_key, refund_entries, sale_entries,
                                                unearned_refund_entries)
from services.settlement.domain.orders import OrderFacts, SaleNotPostedYet, parse_order, parse_refund
from services.settlement.domain.payouts import (CANCELLED, PAID, PENDING, check_transition, is_payable_account,
                                                payable_amount)
from services.settlement.domain.periods import Period, from_ms, period_of, statement_id, to_ms
from services.settlement.domain.reconciliation import ProviderRow, reconcile
from services.settlement.domain.rules import DEFAULT_RULE, rule_in_force
from services.settlement.domain.splits import LineSplit, SaleSplit, reverse_lines, split_sale
from services.settlement.domain.statements import Statement, build_statement
from services.settlement.events import EntriesPosted, PostedEntry, StatementClosed
from services.settlement.repository import (JournalRepository, LocationRepository, PaymentRepository,
                                            PayoutRepository, ReconciliationRepository, ReturnRepository,
                                            SplitRuleRepository, StatementRepository, new_id, now_utc)

log = get_logger("settlement.ledger")
ORDER_CONFIRMED = "orders.order.confirmed"
ORDER_COMPLETED = "orders.order.completed"
ORDER_REFUNDED = "orders.order.refunded"
RETURN_RECEIVED = "orders.return.received"
EARNING_KINDS = [CAPTURE, SALE, REFUND]


class Ledger:
    def __init__(self, app: web.Application) -> None:
        self.mongo: Mongo = app[MONGO]
        self.outbox = app[OUTBOX]
        self.settings = app[SETTINGS]
        self.journal = JournalRepository(self.mongo)
        self.rules = SplitRuleRepository(self.mongo)
        self.locations = LocationRepository(self.mongo)
        self.payments = PaymentRepository(self.mongo)
        self.statements = StatementRepository(self.mongo)
        self.payouts = PayoutRepository(self.mongo)
        self.returns = ReturnRepository(self.mongo)
        self.reconciliations = ReconciliationRepository(self.mongo)

    @property
    def offset(self) -> int:
        return self.settings.period_utc_offset_minutes

    # -- postings --------------------------------------------------------------------------------
    async def post(self, session, *, key: str, kind: str, order_id: str | None, source: Envelope | None,
                   entries: tuple[Entry, ...], occurred_at: datetime, rule_version: int | None = None,
                   details: dict | None = None, memo: str = "", franchisee_of: dict | None = None,
                   key_checked: bool = False) -> dict | None:
        """Write one balanced posting under `key`, unless a posting with that key exists (then nothing).

        It is booked at the time its event occurred, unless that falls in a period already closed for one of
        its accounts: then it is booked now, in the first open period (closed statements never change)."""
        if not key_checked and await self.journal.posting_by_key(key, session) is not None:
            self.mongo.after_commit(lambda: metrics.POSTINGS.labels(kind, "duplicate").inc())
            return None
        involved = sorted({entry.account for entry in entries})
        now = now_utc()
        now_ms = to_ms(now)
        booked_ms = min(to_ms(occurred_at), now_ms)
        frozen_until = await self.journal.frozen_until(involved, session)
        if booked_ms < frozen_until:
            booked_ms = max(now_ms, frozen_until)
        posting = {"_id": new_id(f"pst_{booked_ms:013d}"), "key": key, "kind": kind,
                   "order_id": order_id, "source_event_type": source.type if source else None,
                   "source_event_id": source.id if source else None, "rule_version": rule_version,
                   "booked_ms": booked_ms, "booked_at": from_ms(booked_ms), "posted_at": now, "memo": memo,
                   "entries": [{"account": e.account, "debit": e.debit, "credit": e.credit} for e in entries],
                   **(details or {})}
        await self.journal.insert(posting, entries, session, franchisee_of or {})
        await self.outbox.record(session, EntriesPosted(
            posting_id=posting["_id"], key=key, kind=kind, order_id=order_id,
            source_event_type=posting["source_event_type"] or kind, rule_version=rule_version,
            booked_at=posting["booked_at"], entries=[PostedEntry(**e) for e in posting["entries"]]),
            subject=order_id or key)

        def committed() -> None:
            metrics.POSTINGS.labels(kind, "posted").inc()
            log.info("settlement.posted", posting_id=posting["_id"], key=key, kind=kind, order_id=order_id,
                     booked_at=posting["booked_at"].isoformat(), rule_version=rule_version)
        self.mongo.after_commit(committed)
        return posting

    @staticmethod
    def _franchisee_of(order: OrderFacts) -> dict:
        """Franchise stores' and franchisees' accounts remember their franchisee (statement.closed carries it)."""
        owners = {}
        for location in {line.location for line in order.lines if line.location is not None}:
            if location.ownership == "franchise" and location.franchisee_id:
                owners[accounts.store(location.id)] = location.franchisee_id
                owners[accounts.franchisee(location.franchisee_id)] = location.franchisee_id
        return owners

    async def order_facts(self, envelope: Envelope, session) -> OrderFacts:
        return parse_order(envelope.data, await self.locations.known(session))

    async def record_capture(self, session, order: OrderFacts, envelope: Envelope) -> None:
        """Payment captured: remember it for reconciliation and move it into deferred revenue (once)."""
        key = posting_key(order.order_id, ORDER_CONFIRMED)
        if await self.journal.posting_by_key(key, session) is not None:  # the payment was recorded with it
            self.mongo.after_commit(lambda: metrics.POSTINGS.labels(CAPTURE, "duplicate").inc())
            return
        if order.payment.payment_id:
            await self.payments.record_if_absent({
                "_id": order.payment.payment_id, "order_id": order.order_id, "provider": order.payment.provider,
                "amount": order.payment.amount, "fee": order.payment.fee, "captured_at": envelope.occurred_at,
                "captured_ms": to_ms(envelope.occurred_at)}, session)
        await self.post(session, key=key, kind=CAPTURE, key_checked=True,
                        order_id=order.order_id, source=envelope, entries=capture_entries(order.payment.amount),
                        occurred_at=envelope.occurred_at, memo=f"payment {order.payment.payment_id or '-'} captured",
                        details={"payment_id": order.payment.payment_id})

    async def record_sale(self, session, order: OrderFacts, envelope: Envelope) -> None:
        """Order completed: recognise the net amount and credit every party its share under the rule in force."""
        key = posting_key(order.order_id, ORDER_COMPLETED)
        if await self.journal.posting_by_key(key, session) is not None:
            self.mongo.after_commit(lambda: metrics.POSTINGS.labels(SALE, "duplicate").inc())
            return
        # Before the start-up seeding has run, the default rule (version 1) is the rule set.
        rule = rule_in_force(await self.rules.all(session) or [DEFAULT_RULE], envelope.occurred_at)
        split = split_sale(order, rule)
        location = order.location
        posting = await self.post(
            session, key=key, kind=SALE, key_checked=True, order_id=order.order_id, source=envelope,
            entries=sale_entries(split),
            occurred_at=envelope.occurred_at, rule_version=rule.version, memo=f"sale {order.order_id}",
            franchisee_of=self._franchisee_of(order),
            details={"net_total": split.net_total, "channel": order.channel,
                     "fulfilment": {"type": order.fulfilment_type, "location_id": location.id if location else None,
                                    "ownership": location.ownership if location else None,
                                    "franchisee_id": location.franchisee_id if location else None},
                     "staff_id": order.staff_id, "split_lines": [line.to_dict() for line in split.lines]})
        if posting is not None:
            shares = split.by_account()

            def observe() -> None:
                metrics.ORDER_NET_FEN.observe(split.net_total)
                for account, amount in shares.items():
                    kind = accounts.party_of(account)[0]
                    metrics.CREDITED_FEN.labels(kind, "credit" if amount > 0 else "debit").inc(abs(amount))
            self.mongo.after_commit(observe)

    async def record_refund(self, session, envelope: Envelope) -> None:
        """Refund: reverse exactly the refunded lines' shares (or the deferred money before completion)."""
        refund = parse_refund(envelope.data)
        key = posting_key(refund.order_id, ORDER_REFUNDED, refund.refund_ref or envelope.id)
        if await self.journal.posting_by_key(key, session) is not None:
            self.mongo.after_commit(lambda: metrics.POSTINGS.labels(REFUND, "duplicate").inc())
            return
        sales = await self.journal.postings_of_order(refund.order_id, SALE, session)
        if not sales and refund.return_id:
            raise SaleNotPostedYet(f"order {refund.order_id}: return {refund.return_id} refunded before the sale "
                                   "was posted")
        if not sales:
            self.mongo.after_commit(lambda: metrics.REFUNDS.labels("before_completion").inc())
            await self.post(session, key=key, kind=REFUND, key_checked=True, order_id=refund.order_id, source=envelope,
                            entries=unearned_refund_entries(refund.amount), occurred_at=envelope.occurred_at,
                            memo="refund before completion", details={"refund_amount": refund.amount,
                                                                      "refund_ref": refund.refund_ref})
            return
        sale_doc = sales[0]
        sale = SaleSplit(order_id=refund.order_id, rule_version=sale_doc["rule_version"],
                         net_total=sale_doc["net_total"],
                         lines=tuple(LineSplit.from_dict(line) for line in sale_doc["split_lines"]))
        refunded_before: dict[int, int] = defaultdict(int)
        for earlier in await self.journal.postings_of_order(refund.order_id, REFUND, session):
            for item in earlier.get("units_by_line", []):
                refunded_before[item["index"]] += item["units"]
        requested = [(line.sku_id, line.qty) for line in refund.lines] if refund.lines else None
        reversal = reverse_lines(sale, dict(refunded_before), requested)
        entries = refund_entries(reversal, refund.amount)
        difference = refund.amount - sum(reversal.by_account.values())
        await self.post(session, key=key, kind=REFUND, key_checked=True, order_id=refund.order_id, source=envelope,
                        entries=entries, occurred_at=envelope.occurred_at, rule_version=sale.rule_version,
                        memo=f"refund {refund.refund_ref or ''}".strip(),
                        details={"refund_amount": refund.amount, "refund_ref": refund.refund_ref,
                                 "units_by_line": [{"index": index, "units": units}
                                                   for index, units in sorted(reversal.units_by_line.items())],
                                 "unmatched": [{"sku_id": sku, "qty": qty} for sku, qty in reversal.unmatched],
                                 "amount_difference": difference,
                                 # for finance's review list: the refund does not match the sale it reverses
                                 "anomaly": bool(reversal.unmatched or difference)})

        def observe() -> None:
            metrics.REFUNDS.labels("after_completion").inc()
            for account, amount in reversal.by_account.items():
                metrics.REVERSED_FEN.labels(accounts.party_of(account)[0]).inc(abs(amount))
            if reversal.unmatched:
                metrics.REFUND_ANOMALIES.labels("unmatched_units").inc()
            if difference:
                metrics.REFUND_ANOMALIES.labels("amount_difference").inc()
        self.mongo.after_commit(observe)

    async def record_return(self, session, envelope: Envelope) -> None:
        data = envelope.data
        return_id = data.get("return_id") or envelope.id
        await self.returns.record_if_absent({
            "_id": return_id, "order_id": data.get("order_id"), "location_id": data.get("location_id"),
            "lines": [{"sku_id": line.get("sku_id"), "qty": line.get("qty")} for line in data.get("lines") or []
                      if isinstance(line, dict)],
            "received_at": envelope.occurred_at}, session)

    # -- statements ------------------------------------------------------------------------------
    async def statement(self, account: str, period: Period, session=None) -> Statement:
        closed = await self.statements.get(statement_id(account, period), session)
        opening = await self.journal.sum_before(account, period.start_ms, session)
        lines = await self.journal.lines_between(account, period.start_ms, period.end_ms, session)
        return build_statement(account, period, opening, lines, "closed" if closed else "open")

    async def close_period(self, session, granularity: str, day: date, account: str | None, closed_by: str
                           ) -> tuple[Period, list[dict], list[dict]]:
        """Freeze the period's statements (one account, or every account); returns (period, new, existing)."""
        period = period_of(granularity, day, self.offset)
        if period.end > now_utc():
            raise Problem(409, "period-not-ended", f"the {granularity} starting {period.label} has not ended yet; "
                          "only ended periods can be closed", period_end=period.end.isoformat())
        if account is not None:
            doc = await self.journal.account(account, session)
            if doc is None:
                raise not_found("account")
            account_docs = [doc]
        else:
            account_docs = await self.journal.all_accounts(session)
        closed, existing = [], []
        for doc in account_docs:
            sid = statement_id(doc["_id"], period)
            already = await self.statements.get(sid, session)
            if already is not None:
                existing.append(already)
                continue
            frozen = await self.statement(doc["_id"], period, session)
            kind, party_id = accounts.party_of(doc["_id"])
            franchisee_id = doc.get("franchisee_id")
            store_id = party_id if kind == "store" else None
            record = {"_id": sid, "account": doc["_id"], "party_kind": kind, "party_id": party_id,
                      "franchisee_id": franchisee_id, "store_id": store_id, "granularity": granularity,
                      "period_start": period.start, "period_end": period.end, "start_ms": period.start_ms,
                      "end_ms": period.end_ms, "opening": frozen.opening, "total_credits": frozen.total_credits,
                      "total_debits": frozen.total_debits, "closing": frozen.closing,
                      "entry_count": len(frozen.lines), "status": "closed", "closed_at": now_utc(),
                      "closed_by": closed_by}
            await self.statements.add(record, session)
            await self.journal.freeze(doc, period.end_ms, session)
            await self.outbox.record(session, StatementClosed(
                statement_id=sid, account=doc["_id"], party_kind=kind, party_id=party_id,
                franchisee_id=franchisee_id, store_id=store_id, granularity=granularity,
                period_start=period.start, period_end=period.end, opening=frozen.opening,
                total_credits=frozen.total_credits, total_debits=frozen.total_debits, closing=frozen.closing,
                net_amount=frozen.closing, entry_count=len(frozen.lines)), subject=sid)
            closed.append(record)
        count = len(closed)
        self.mongo.after_commit(lambda: metrics.STATEMENTS_CLOSED.labels(granularity).inc(count))
        return period, closed, existing

    # -- payouts ---------------------------------------------------------------------------------
    async def create_payout_batch(self, session, granularity: str, day: date, created_by: str) -> dict:
        period = period_of(granularity, day, self.offset)
        if period.end > now_utc():
            raise Problem(409, "period-not-ended", f"the {granularity} starting {period.label} has not ended yet")
        existing = await self.payouts.for_period(granularity, period.start_ms, session)
        if existing is not None:
            raise Problem(409, "payout-batch-exists", f"the {granularity} starting {period.label} already has "
                          f"payout batch {existing['_id']}", batch_id=existing["_id"])
        items, not_closed = [], []
        for doc in await self.journal.all_accounts(session, kinds=accounts.PAYABLE_KINDS):
            if not is_payable_account(doc["_id"]):
                continue
            earned = await self.journal.sum_before(doc["_id"], period.end_ms, session, kinds=EARNING_KINDS)
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
            raise Problem(409, "period-not-closed", f"close the {granularity} starting {period.label} first: "
                          f"{len(not_closed)} account(s) with money owed have no closed statement",
                          accounts=not_closed)
        for item in items:
            await self.journal.add_committed_payout(item["account"], item["amount"], session)
        batch = {"_id": f"pob_{granularity}_{period.label:%Y%m%d}", "granularity": granularity,
                 "period_start": period.start, "period_end": period.end, "start_ms": period.start_ms,
                 "end_ms": period.end_ms, "status": PENDING, "items": items,
                 "total": sum(item["amount"] for item in items), "created_at": now_utc(), "created_by": created_by}
        await self.payouts.add(batch, session)

        def observe() -> None:
            metrics.PAYOUT_BATCHES.labels(PENDING).inc()
            for item in items:
                metrics.PAYOUT_FEN.labels(item["party_kind"]).inc(item["amount"])
        self.mongo.after_commit(observe)
        return {**batch, "version": 1}

    async def change_payout_status(self, session, batch_id: str, target: str, actor: str) -> dict:
        batch = await self.payouts.get(batch_id, session)
        if batch is None:
            raise not_found("payout batch")
        if batch["status"] == target:
            return batch  # repeating the same transition changes nothing
        check_transition(batch["status"], target)
        if target == PAID:
            amounts = {item["account"]: item["amount"] for item in batch["items"]}
            await self.post(session, key=posting_key(batch_id, PAYOUT), kind=PAYOUT, order_id=None, source=None,
                            entries=payout_entries(amounts), occurred_at=now_utc(), memo=f"payout {batch_id}",
                            details={"batch_id": batch_id})
        elif target == CANCELLED:
            for item in batch["items"]:
                await self.journal.add_committed_payout(item["account"], -item["amount"], session)
        saved = await self.payouts.save({**batch, "status": target, f"{target}_at": now_utc(),
                                         f"{target}_by": actor}, session)
        self.mongo.after_commit(lambda: metrics.PAYOUT_BATCHES.labels(target).inc())
        return saved

    # -- reconciliation --------------------------------------------------------------------------
    async def reconcile(self, rows: list[ProviderRow], captured_from: datetime, captured_to: datetime,
                        provider: str | None, created_by: str) -> dict:
        """The report of a provider file: every payment captured in the window must be in it, every row in
        it must be a captured payment (captured at any time), with the same amount (and fee, when known)."""
        async def read():
            expected = await self.payments.captured_between(to_ms(captured_from), to_ms(captured_to), provider)
            known = {**await self.payments.by_ids([row.payment_id for row in rows]), **expected}
            return expected, known

        expected, known = await self.mongo.read_committed(read)
        result = reconcile(rows, known, expected.keys())
        created = now_utc()
        return {"_id": new_id(f"rec_{to_ms(created):013d}"), "status": "clean" if result.clean else "discrepancies",
                "captured_from": captured_from, "captured_to": captured_to, "provider": provider, "rows": len(rows),
                "expected": len(expected), "matched": len(result.matched), "missing": list(result.missing),
                "extra": list(result.extra), "mismatched": list(result.mismatched), "created_at": created,
                "created_ms": to_ms(created), "created_by": created_by}

    async def store_reconciliation(self, session, report: dict) -> None:
        await self.reconciliations.add(report, session)

        def observe() -> None:
            metrics.RECONCILIATIONS.labels(report["status"]).inc()
            for kind in ("missing", "extra", "mismatched"):
                metrics.DISCREPANCIES.labels(kind).inc(len(report[kind]))
        self.mongo.after_commit(observe)
