"""The journal: order events become balanced postings (capture, sale split, refund), once each.

Every method is one unit of work. Called from a consumer, it joins the bus's inbox transaction (the kit's
unit of work is re-entrant), so the postings, their outbox events and the inbox record commit together.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from aiohttp import web

from libs.bus import Envelope
from libs.clock import from_ms, to_ms, utcnow
from libs.ids import new_id
from libs.logging import get_logger
from libs.mongo import Mongo
from libs.outbox import Outbox
from libs.pagination import decode_cursor, page_of
from libs.principal import Principal
from services.settlement import metrics
from services.settlement.domain import accounts
from services.settlement.domain.journal import (CAPTURE, REFUND, SALE, Entry, capture_entries, posting_key,
                                                refund_entries, sale_entries, unearned_refund_entries)
from services.settlement.domain.orders import OrderFacts, SaleNotPostedYet, parse_order, parse_refund
from services.settlement.domain.rules import DEFAULT_RULE, rule_in_force
from services.settlement.domain.splits import LineSplit, SaleSplit, reverse_lines, split_sale
from services.settlement.events import EntriesPosted, PostedEntry
from services.settlement.repository import (JournalRepository, LocationRepository, PaymentRepository,
                                            ReturnRepository, SplitRuleRepository)
from services.settlement.usecases.access import readable

log = get_logger("settlement.journal")
ORDER_CONFIRMED = "orders.order.confirmed"
ORDER_COMPLETED = "orders.order.completed"
ORDER_REFUNDED = "orders.order.refunded"
RETURN_RECEIVED = "orders.return.received"
ANOMALIES_PER_PAGE = 50


class Journal:
    def __init__(self, mongo: Mongo, outbox: Outbox) -> None:
        self.mongo, self.outbox = mongo, outbox
        self.journal, self.rules = JournalRepository(mongo), SplitRuleRepository(mongo)
        self.locations, self.payments, self.returns = (LocationRepository(mongo), PaymentRepository(mongo),
                                                       ReturnRepository(mongo))

    # -- order events ----------------------------------------------------------------------------
    async def order_confirmed(self, envelope: Envelope) -> None:
        """Paid: record the captured payment for reconciliation and hold the money as deferred revenue."""
        async def unit(session) -> None:
            await self._record_capture(session, await self._order_facts(envelope, session), envelope)
        await self.mongo.transaction(unit)

    async def order_completed(self, envelope: Envelope) -> None:
        """Completed: post the sale split. The capture is posted too if its own event has not arrived (in-store
        sales complete right after payment); its key makes the later confirmed event post nothing."""
        async def unit(session) -> None:
            order = await self._order_facts(envelope, session)
            await self._record_capture(session, order, envelope)
            await self._record_sale(session, order, envelope)
        await self.mongo.transaction(unit)

    async def order_refunded(self, envelope: Envelope) -> None:
        await self.mongo.transaction(lambda session: self._record_refund(session, envelope))

    async def return_received(self, envelope: Envelope) -> None:
        """For information only: the money side follows with orders.order.refunded."""
        data = envelope.data
        doc = {"_id": data.get("return_id") or envelope.id, "order_id": data.get("order_id"),
               "location_id": data.get("location_id"), "received_at": envelope.occurred_at,
               "lines": [{"sku_id": line.get("sku_id"), "qty": line.get("qty")} for line in data.get("lines") or []
                         if isinstance(line, dict)]}
        await self.mongo.transaction(lambda session: self.returns.record_if_absent(doc, session))

    async def remember_locations(self, docs: list[dict]) -> None:
        """The local copy of the locations: the fallback for order events that do not carry their ownership."""
        async def unit(session) -> None:
            for doc in docs:
                await self.locations.upsert(doc, session)
        await self.mongo.transaction(unit)

    # -- reads -----------------------------------------------------------------------------------
    async def accounts_for(self, principal: Principal) -> dict:
        # Balances are read as committed: a posting being written moves several accounts at once.
        docs = await self.mongo.read_committed(self.journal.all_accounts)
        return {"items": [doc for doc in docs if readable(principal, doc["_id"])], "next_cursor": None}

    async def postings_of_order(self, order_id: str) -> dict:
        docs = await self.mongo.read_committed(lambda: self.journal.postings_of_order(order_id))
        return {"items": docs, "next_cursor": None}

    async def refund_anomalies(self, cursor: str | None) -> dict:
        scope = "settlement.refund-anomalies"
        docs = await self.journal.anomalies(decode_cursor(cursor, scope), ANOMALIES_PER_PAGE + 1)
        return page_of(docs, ANOMALIES_PER_PAGE, scope=scope)

    # -- postings --------------------------------------------------------------------------------
    async def post(self, session, *, key: str, kind: str, order_id: str | None, source: Envelope | None,
                   entries: tuple[Entry, ...], occurred_at: datetime, rule_version: int | None = None,
                   details: dict | None = None, memo: str = "", franchisee_of: dict | None = None) -> dict:
        """Write one balanced posting under `key` (the caller made sure no posting has that key yet).

        It is booked at the time its event occurred, unless that falls in a period already closed for one of
        its accounts: then it is booked now, in the first open period (closed statements never change)."""
        involved = sorted({entry.account for entry in entries})
        now = utcnow()
        booked_ms = min(to_ms(occurred_at), to_ms(now))
        frozen_until = await self.journal.frozen_until(involved, session)
        if booked_ms < frozen_until:
            booked_ms = max(to_ms(now), frozen_until)
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

    async def already_posted(self, key: str, kind: str, session) -> bool:
        """Whether `key` has its posting already (a redelivered or repeated event): then nothing is posted."""
        if await self.journal.posting_by_key(key, session) is None:
            return False
        self.mongo.after_commit(lambda: metrics.POSTINGS.labels(kind, "duplicate").inc())
        return True

    async def _order_facts(self, envelope: Envelope, session) -> OrderFacts:
        return parse_order(envelope.data, await self.locations.known(session))

    async def _record_capture(self, session, order: OrderFacts, envelope: Envelope) -> None:
        """Payment captured: remember it for reconciliation and move it into deferred revenue (once)."""
        key = posting_key(order.order_id, ORDER_CONFIRMED)
        if await self.already_posted(key, CAPTURE, session):  # the payment was recorded with it
            return
        if order.payment.payment_id:
            await self.payments.record_if_absent({
                "_id": order.payment.payment_id, "order_id": order.order_id, "provider": order.payment.provider,
                "amount": order.payment.amount, "fee": order.payment.fee, "captured_at": envelope.occurred_at,
                "captured_ms": to_ms(envelope.occurred_at)}, session)
        await self.post(session, key=key, kind=CAPTURE, order_id=order.order_id, source=envelope,
                        entries=capture_entries(order.payment.amount), occurred_at=envelope.occurred_at,
                        memo=f"payment {order.payment.payment_id or '-'} captured",
                        details={"payment_id": order.payment.payment_id})

    async def _record_sale(self, session, order: OrderFacts, envelope: Envelope) -> None:
        """Order completed: recognise the net amount and credit every party its share under the rule in force."""
        key = posting_key(order.order_id, ORDER_COMPLETED)
        if await self.already_posted(key, SALE, session):
            return
        # Before the start-up seeding has run, the default rule (version 1) is the rule set.
        rule = rule_in_force(await self.rules.all(session) or [DEFAULT_RULE], envelope.occurred_at)
        split = split_sale(order, rule)
        location = order.location
        await self.post(
            session, key=key, kind=SALE, order_id=order.order_id, source=envelope, entries=sale_entries(split),
            occurred_at=envelope.occurred_at, rule_version=rule.version, memo=f"sale {order.order_id}",
            franchisee_of=_franchisee_of(order),
            details={"net_total": split.net_total, "channel": order.channel,
                     "fulfilment": {"type": order.fulfilment_type, "location_id": location.id if location else None,
                                    "ownership": location.ownership if location else None,
                                    "franchisee_id": location.franchisee_id if location else None},
                     "staff_id": order.staff_id, "split_lines": [line.to_dict() for line in split.lines]})
        shares = split.by_account()

        def observe() -> None:
            metrics.ORDER_NET_FEN.observe(split.net_total)
            for account, amount in shares.items():
                kind = accounts.party_of(account)[0]
                metrics.CREDITED_FEN.labels(kind, "credit" if amount > 0 else "debit").inc(abs(amount))
        self.mongo.after_commit(observe)

    async def _record_refund(self, session, envelope: Envelope) -> None:
        """Refund: reverse exactly the refunded lines' shares (or the deferred money before completion)."""
        refund = parse_refund(envelope.data)
        key = posting_key(refund.order_id, ORDER_REFUNDED, refund.refund_ref or envelope.id)
        if await self.already_posted(key, REFUND, session):
            return
        sales = await self.journal.postings_of_order(refund.order_id, SALE, session)
        if not sales and refund.return_id:
            raise SaleNotPostedYet(f"order {refund.order_id}: return {refund.return_id} refunded before the sale "
                                   "was posted")
        if not sales:
            self.mongo.after_commit(lambda: metrics.REFUNDS.labels("before_completion").inc())
            await self.post(session, key=key, kind=REFUND, order_id=refund.order_id, source=envelope,
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
        difference = refund.amount - sum(reversal.by_account.values())
        await self.post(session, key=key, kind=REFUND, order_id=refund.order_id, source=envelope,
                        entries=refund_entries(reversal, refund.amount), occurred_at=envelope.occurred_at,
                        rule_version=sale.rule_version, memo=f"refund {refund.refund_ref or ''}".strip(),
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


def _franchisee_of(order: OrderFacts) -> dict:
    """Franchise stores' and franchisees' accounts remember their franchisee (statement.closed carries it)."""
    owners = {}
    for location in {line.location for line in order.lines if line.location is not None}:
        if location.ownership == "franchise" and location.franchisee_id:
            owners[accounts.store(location.id)] = location.franchisee_id
            owners[accounts.franchisee(location.franchisee_id)] = location.franchisee_id
    return owners


JOURNAL = web.AppKey("settlement_journal", Journal)
