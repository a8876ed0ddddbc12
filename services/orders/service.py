"""Application layer of orders: loads the aggregate, calls the domain, saves it with its events in one
transaction, runs the saga's calls to other services, and executes follow-up actions after commit.

Handlers and jobs call this; it holds no HTTP or bus specifics beyond raising `Problem`.
"""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from libs.auth import Principal
from libs.clients import UpstreamError
from libs.logging import get_logger
from libs.mongo import Mongo
from libs.outbox import Outbox
from libs.problems import Problem, not_found
from services.orders import events as ev
from services.orders import metrics
from services.orders.domain import order as domain
from services.orders.domain import pickup, saga
from services.orders.domain.access import can_see, is_owner, is_staff, works_at_order_store
from services.orders.domain.lifecycle import (PENDING, PENDING_PAYMENT, READY_FOR_PICKUP, SHIPPED,
                                              OrderError, epoch_ms, note_event, rfc3339)
from services.orders.domain.pricing import apply_discounts, price_lines
from services.orders.payments.port import PaymentProvider, PaymentTimeout
from services.orders.repository import OrderRepository
from services.orders.settings import OrdersSettings
from services.orders.upstream import Upstreams

log = get_logger("orders")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """Ids that sort by creation time (millisecond clock first), so lists page by id."""
    return f"{prefix}_{int(time.time() * 1000):012x}{os.urandom(5).hex()}"


def problem_of(error: OrderError) -> Problem:
    return Problem(error.status, error.code, error.detail, **error.extensions)


def upstream_problem(exc: UpstreamError) -> Problem:
    """Pass another service's client-facing problem through with its type (sold-out, coupon-unavailable...)."""
    extensions = {k: v for k, v in exc.body.items() if k not in ("type", "title", "status", "detail", "instance")}
    status = exc.status if exc.status in (404, 409, 422) else 502
    return Problem(status, exc.problem_type or "upstream-error", str(exc.body.get("detail") or exc), **extensions)


def actor_of(principal: Principal) -> str:
    if "service" in principal.roles:
        return f"service:{principal.subject}"
    if principal.member_id:
        return f"member:{principal.member_id}"
    if principal.staff_id:
        return f"staff:{principal.staff_id}"
    return f"user:{principal.subject}"


def public_order(doc: dict) -> dict:
    """The order as clients see it (DESIGN §3 shape plus details); never the pickup code hash or costs."""
    lines = [{k: line.get(k) for k in ("sku_id", "product_id", "name", "category", "qty", "unit_price", "subtotal",
                                       "discount", "points_discount", "line_total")} for line in doc["lines"]]
    pickup_state = doc.get("pickup")
    return {
        "id": doc["_id"], "status": doc["status"], "channel": doc["channel"], "member_id": doc.get("member_id"),
        "fulfilment": doc["fulfilment"], "allocations": doc.get("allocations") or [], "lines": lines,
        "totals": doc.get("totals"), "coupon_codes": doc.get("coupon_codes", []), "points": doc.get("points", 0),
        "attribution": doc.get("attribution") or {}, "payment": doc.get("payment"),
        "payment_attempt": {k: v for k, v in (doc.get("payment_attempt") or {}).items() if k != "id"} or None,
        "expires_at": doc.get("expires_at"), "created_at": doc.get("created_at"), "updated_at": doc.get("updated_at"),
        "shipment": doc.get("shipment"), "cancellation": doc.get("cancellation"), "rejection": doc.get("rejection"),
        "pickup": ({"failed_attempts": pickup_state.get("failed_attempts", 0), "locked": pickup_state.get("locked", False)}
                   if pickup_state else None),
        "returns": doc.get("returns", []),
        "refunds": [{k: r.get(k) for k in ("id", "amount", "reason", "return_id", "state")} for r in doc.get("refunds", [])],
        "timeline": doc.get("timeline", []),
    }


class OrderService:
    def __init__(self, settings: OrdersSettings, mongo: Mongo, outbox: Outbox, upstreams: Upstreams,
                 payments: PaymentProvider) -> None:
        self.settings = settings
        self.mongo = mongo
        self.outbox = outbox
        self.repo = OrderRepository(mongo)
        self.upstreams = upstreams
        self.payments = payments
        self._background: set[asyncio.Task] = set()
        self._sold_out: dict[tuple, tuple[float, dict]] = {}
        self._reservation_gate = asyncio.Semaphore(settings.max_reservations_in_flight)

    # -- unit of work ---------------------------------------------------------------------------
    async def mutate(self, order_id: str, change: Callable[[dict], object], *, session_hook=None,
                     extra_events: Callable[[dict, object], list] | None = None):
        """Load, change (pure domain), save and record the resulting events in one transaction.

        `change(order)` returns a `domain.Change` (or anything; non-Change results record no events).
        Returns (order, result). Domain refusals become problems; nothing is written then.
        """
        async def unit(session):
            order = await self.repo.get(order_id, session)
            if order is None:
                raise not_found("order")
            try:
                result = change(order)
            except OrderError as error:
                raise problem_of(error) from None
            await self.repo.save(order, session)
            if isinstance(result, domain.Change):
                for event in self.events_for(order, result.events):
                    await self.outbox.record(session, event, subject=order["_id"])
            if extra_events is not None:
                for event in extra_events(order, result):
                    await self.outbox.record(session, event, subject=order["_id"])
            if session_hook is not None:
                await session_hook(session, order)
            return order, result

        order, result = await self.mongo.transaction(unit)
        if isinstance(result, domain.Change):
            for status in result.events:
                metrics.TRANSITIONS.labels(order["fulfilment"]["type"], status).inc()
        if order.get("pending_actions"):
            self.run_actions_soon(order["_id"])
        return order, result

    def events_for(self, order: dict, names: list[str], **extra) -> list:
        fields = ev.order_fields(order)
        out = []
        for name in names:
            if name in ev.SIMPLE_EVENTS:
                out.append(ev.SIMPLE_EVENTS[name](**fields))
            elif name == "placed":
                out.append(ev.OrderPlaced(**fields, expires_at=order["expires_at"]))
            elif name == "shipped":
                out.append(ev.OrderShipped(**fields, carrier=order["shipment"]["carrier"],
                                           tracking_number=order["shipment"]["tracking_number"]))
            elif name == "cancelled":
                refund = sum(r["amount"] for r in order.get("refunds", []) if r["reason"] == "cancel")
                out.append(ev.OrderCancelled(**fields, reason=order["cancellation"]["reason"], refund_amount=refund))
            elif name == "ready_for_pickup":
                pass  # recorded by the caller, which alone knows the plain code
            elif name == "return_received":
                pass  # recorded by the caller with the return record
            else:
                raise ValueError(f"no event for {name}")
        return out

    # -- reads ----------------------------------------------------------------------------------
    async def get_visible(self, principal: Principal, order_id: str) -> dict:
        order = await self.repo.get_committed(order_id)
        if order is None or not can_see(principal, order):
            raise not_found("order")
        if order["status"] == PENDING and not principal.is_admin:
            raise not_found("order")  # a checkout still in progress is not an order yet
        return order

    async def list_orders(self, principal: Principal, store_id: str | None, status: str | None, todo: bool,
                          cursor: str | None, limit: int) -> tuple[list[dict], str | None]:
        query: dict = {}
        if store_id:
            if not principal.can_see_store(store_id):
                raise Problem(403, "forbidden", "you can only list the orders of your own stores")
            query["store_ids"] = store_id
        elif principal.member_id:
            query["member_id"] = principal.member_id
        elif not principal.is_admin:
            raise Problem(422, "store-required", "staff list orders of one store: pass store_id")
        if todo:
            query["status"] = {"$in": ["confirmed", "allocated", "ready_for_pickup"]}
        elif status:
            query["status"] = status
        else:
            query["status"] = {"$nin": [PENDING, "rejected"]}
        return await self.repo.page(query, cursor, limit)

    # -- checkout saga --------------------------------------------------------------------------
    async def checkout(self, principal: Principal, request, remember) -> tuple[int, dict]:
        started = time.perf_counter()
        outcome = "placed"
        try:
            return await self._checkout(principal, request, remember)
        except Problem as problem:
            # Bounded reasons: the business refusals by name, the client's mistakes as "invalid", a
            # sibling down or slow as "upstream" (alerted on), anything unexpected as "other" (alerted on).
            outcome = problem.type if problem.type in ("sold-out", "coupon-unavailable", "insufficient-points") \
                else ("upstream" if problem.status >= 500 else "invalid")
            metrics.CHECKOUTS_REJECTED.labels(outcome).inc()
            raise
        except Exception:
            outcome = "other"
            metrics.CHECKOUTS_REJECTED.labels(outcome).inc()
            raise
        finally:
            metrics.CHECKOUT_DURATION.labels("placed" if outcome == "placed" else "rejected").observe(
                time.perf_counter() - started)

    async def _checkout(self, principal: Principal, request, remember) -> tuple[int, dict]:
        fulfilment = request.fulfilment.model_dump(exclude_none=True)
        kind = fulfilment["type"]
        member_id = self._buyer(principal, kind, fulfilment)
        coupon_codes, points = list(request.coupon_codes), request.points
        if member_id is None and (coupon_codes or points):
            raise Problem(422, "member-required", "coupons and points need a member")
        requested = [line.model_dump() for line in request.lines]
        if not requested:  # scan and pay: the codes scanned in store are the basket
            requested = await self._scanned_lines(fulfilment.get("scanned_codes") or [])
        quotes = await self._quote(request.channel, requested)
        try:
            lines = price_lines(requested, quotes)
        except OrderError as error:
            raise problem_of(error) from None
        now = utcnow()
        order_id = new_id("ord")
        try:
            order = domain.new_order(order_id, member_id=member_id, channel=request.channel, fulfilment=fulfilment,
                                     lines=lines, requested_lines=requested, coupon_codes=coupon_codes, points=points,
                                     attribution={}, created_by=actor_of(principal), now=now)
        except OrderError as error:
            raise problem_of(error) from None
        planned = saga.checkout_steps(coupon_codes, points)
        # Every planned step is written down before the first call, so a crash at any point leaves an
        # order that the stuck-checkout sweeper can compensate (releases are idempotent at stock/membership).
        order["saga"] = {"steps": planned, "started": planned}
        order["totals"] = apply_discounts(lines, 0, 0)[1]
        demand = self._demand_key(kind, fulfilment, lines)
        window = self.settings.payment_window_s
        # A bounded number of reservations in flight per process: backpressure on stock, and in a flash sale
        # the buyers queued here learn "sold out" from the first refusal instead of each asking stock.
        async with self._reservation_gate:
            self._answer_recent_sold_out(demand)
            await self.mongo.transaction(lambda s: self.repo.add(order, s))
            reservation = await self._saga_step(order_id, [], demand=demand, call=lambda: self.upstreams.reserve(
                order_id, kind, [{"sku_id": l["sku_id"], "qty": l["qty"]} for l in lines],
                location_id=fulfilment.get("location_id"),
                destination=({"lat": fulfilment["address"]["lat"], "lng": fulfilment["address"]["lng"]}
                             if kind == "ship" else None),
                ttl_s=window + self.settings.reservation_margin_s))
        benefits = None
        if saga.HOLD_BENEFITS in planned:
            benefits = await self._saga_step(order_id, [saga.RESERVE_STOCK], call=lambda: self.upstreams.hold_benefits({
                "order_id": order_id, "member_id": member_id, "channel": request.channel,
                "coupon_codes": coupon_codes, "points": points,
                "lines": [{"sku_id": l["sku_id"], "category": l["category"], "qty": l["qty"],
                           "unit_price": l["unit_price"]} for l in lines]}))
        try:
            priced, totals = apply_discounts(lines, int((benefits or {}).get("coupon_discount", 0)),
                                             int((benefits or {}).get("points_discount", 0)))
        except OrderError as error:
            await self._reject(order_id, error.code, [saga.RESERVE_STOCK, saga.HOLD_BENEFITS])
            raise problem_of(error) from None

        # Attribution is looked up only once stock is secured: in a flash sale the losers never cost
        # membership a call.
        attribution = await self._attribution(principal, member_id, kind, fulfilment, request.attribution)

        async def record_placed(session, placed):
            await remember(session, 201, public_order(placed))

        def place(order):
            order["attribution"] = attribution
            return domain.place(order, lines=priced, totals=totals, reservation=reservation, benefits=benefits,
                                expires_at=utcnow() + timedelta(seconds=window), now=utcnow())

        placed, _ = await self.mutate(order_id, place, session_hook=record_placed)
        metrics.ORDERS_PLACED.labels(request.channel, kind).inc()
        metrics.ORDER_VALUE.labels(request.channel).observe(totals["total"])
        return 201, public_order(placed)

    async def _scanned_lines(self, codes: list[str]) -> list[dict]:
        """Scan and pay: each code scanned in store is one unit of its SKU."""
        lines, unknown = [], []
        for code in codes:
            try:
                sku_id = await self.upstreams.sku_for_code(code)
            except UpstreamError as exc:
                raise upstream_problem(exc) from None
            if sku_id is None:
                unknown.append(code)
            else:
                lines.append({"sku_id": sku_id, "qty": 1})
        if unknown:
            raise Problem(422, "unknown-code", f"no product has the code(s) {', '.join(unknown)}", codes=unknown)
        return lines

    def _buyer(self, principal: Principal, kind: str, fulfilment: dict) -> str | None:
        """Members order for themselves; store staff may ring up an in-store (guest) sale at their store."""
        if principal.member_id and "customer" in principal.roles:
            return principal.member_id
        if is_staff(principal) and kind == "in_store":
            if fulfilment.get("location_id") not in principal.store_ids:
                raise Problem(403, "forbidden", "staff sell in store only at their own store")
            return None
        if "service" in principal.roles and kind == "in_store":
            return None
        raise Problem(403, "forbidden", "only members order online; store staff may create in_store orders")

    async def _quote(self, channel: str, requested: list[dict]) -> dict[str, dict]:
        sku_ids = list(dict.fromkeys(line["sku_id"] for line in requested))
        try:
            quotes = await self.upstreams.quote(channel, sku_ids)
        except UpstreamError as exc:
            raise upstream_problem(exc) from None
        inactive = [s for s in sku_ids if s not in quotes or quotes[s].get("status", "active") != "active"]
        if inactive:
            raise Problem(422, "sku-not-sellable", f"not sellable: {', '.join(inactive)}", sku_ids=inactive)
        return quotes

    async def _attribution(self, principal: Principal, member_id: str | None, kind: str, fulfilment: dict,
                           requested) -> dict:
        """The store / assistant QR scanned in this session first, else the member's binding; in store, the
        sale is that store's. Attribution never blocks a sale: an unreachable membership means none."""
        attribution = {"store_id": None, "staff_id": None, "campaign_id": None, "code": None}
        code = requested.code if requested is not None else None
        scanned = None
        if code:
            attribution["code"] = code
            try:
                scanned = await self.upstreams.qr_code(code)
            except (UpstreamError, Problem) as exc:
                log.warning("orders.qr_lookup_unavailable", error=str(exc))
        if scanned and scanned.get("status", "active") == "active":
            attribution.update({k: scanned.get(k) for k in ("store_id", "staff_id", "campaign_id")})
        elif member_id:
            try:
                binding = await self.upstreams.attribution(member_id)
            except (UpstreamError, Problem) as exc:
                log.warning("orders.attribution_unavailable", error=str(exc))
                binding = {}
            bound_until = binding.get("bound_until")
            if not bound_until or bound_until > rfc3339(utcnow()):
                attribution.update({k: binding.get(k) for k in ("store_id", "staff_id", "campaign_id")})
        if kind == "in_store":
            store = fulfilment["location_id"]
            if attribution["store_id"] != store:
                attribution["staff_id"] = None
            attribution["store_id"] = store
            if is_staff(principal) and principal.staff_id:
                attribution["staff_id"] = principal.staff_id
        return attribution

    @staticmethod
    def _demand_key(kind: str, fulfilment: dict, lines: list[dict]) -> tuple:
        return kind, fulfilment.get("location_id"), tuple(sorted((l["sku_id"], l["qty"]) for l in lines))

    def _answer_recent_sold_out(self, demand: tuple) -> None:
        """Stock said sold-out for exactly this demand a moment ago: answer so at once, without recording a
        checkout or asking stock again (a flash sale's thousands of losers cost almost nothing)."""
        known = self._sold_out.get(demand)
        if known is None:
            return
        until, body = known
        if time.monotonic() >= until:
            self._sold_out.pop(demand, None)
            return
        metrics.SOLD_OUT_SHORTCUTS.inc()
        raise Problem(409, "sold-out", "not enough stock to serve this order", nearest=body.get("nearest", []))

    async def _saga_step(self, order_id: str, done_before: list[str], call, demand: tuple | None = None):
        """Run one forward step; on failure reject the order and compensate what may have taken effect."""
        try:
            return await call()
        except UpstreamError as exc:
            # A definite refusal: this step did not take effect, only earlier ones need undoing.
            if demand is not None and exc.problem_type == "sold-out" and self.settings.sold_out_memory_s > 0:
                if len(self._sold_out) > 10_000:
                    self._sold_out.clear()
                self._sold_out[demand] = (time.monotonic() + self.settings.sold_out_memory_s, exc.body)
            await self._reject(order_id, exc.problem_type or "upstream-error", done_before)
            raise upstream_problem(exc) from None
        except Problem as problem:
            # Unavailable or timed out: the step may have taken effect; undo it as well.
            current = saga.RESERVE_STOCK if not done_before else saga.HOLD_BENEFITS
            await self._reject(order_id, problem.type, [*done_before, current])
            raise

    async def _reject(self, order_id: str, reason: str, started: list[str]) -> None:
        def change(order):
            order["saga"]["started"] = started
            return domain.reject(order, reason, utcnow())
        try:
            await self.mutate(order_id, change)
        except Problem as problem:  # already rejected by the stuck-checkout sweeper
            log.warning("orders.reject_failed", order_id=order_id, error=problem.detail)

    # -- payment --------------------------------------------------------------------------------
    async def pay(self, principal: Principal, order_id: str, card_number: str, remember=None) -> tuple[int, dict]:
        """Charge the order's total through the provider port. `remember(session, status, body)` stores the
        answer under the request's Idempotency-Key in the transaction that records the outcome."""
        attempt_id = new_id("pat")
        stale_ms = self.settings.payment_attempt_timeout_s * 1000

        def answer(status: int):
            async def hook(session, order):
                if remember is not None:
                    await remember(session, status, public_order(order))
            return hook

        def check_payer(order):
            if not can_see(principal, order) or not (
                    is_owner(principal, order) or principal.is_admin or
                    (order["member_id"] is None and works_at_order_store(principal, order))):
                raise OrderError("not-found", "order not found", status=404)

        current = await self.repo.get_committed(order_id)
        if current is not None:
            try:
                check_payer(current)
            except OrderError as error:
                raise problem_of(error) from None
            earlier = domain.stale_attempt(current, utcnow(), stale_ms)
            if earlier is not None:
                # The answer to an earlier charge never arrived: ask the provider before charging again.
                found = await self.payments.find_charge(earlier["id"])
                if found is not None and found.succeeded:
                    payment = {"provider": self.payments.name, "payment_id": found.payment_id,
                               "amount": found.amount, "fee": found.fee}
                    return 200, public_order(await self._confirm(order_id, earlier["id"], payment,
                                                                 actor_of(principal), answer(200)))

        def claim(order):
            check_payer(order)
            domain.begin_payment(order, attempt_id, utcnow(), stale_ms)

        order, _ = await self.mutate(order_id, claim)
        amount = order["totals"]["total"]
        if amount == 0:
            payment = {"provider": "none", "payment_id": f"free_{attempt_id}", "amount": 0, "fee": 0}
            return 200, public_order(await self._confirm(order_id, attempt_id, payment, actor_of(principal),
                                                         answer(200)))
        try:
            result = await self.payments.charge(order_id=order_id, attempt_id=attempt_id, amount=amount,
                                                card_number=card_number)
        except PaymentTimeout:
            metrics.PAYMENTS.labels(self.payments.name, "timeout").inc()
            order, _ = await self.mutate(order_id, lambda o: domain.payment_failed(
                o, attempt_id, "unknown", "provider timeout; awaiting its callback", utcnow()),
                session_hook=answer(202))
            return 202, public_order(order)
        except Exception:
            await self.mutate(order_id, lambda o: domain.payment_failed(o, attempt_id, "failed", "provider error", utcnow()))
            raise Problem(502, "payment-provider-error", "the payment provider failed; nothing was charged")
        if not result.succeeded:
            metrics.PAYMENTS.labels(self.payments.name, "declined").inc()
            await self.mutate(order_id, lambda o: domain.payment_failed(o, attempt_id, "declined",
                                                                        result.decline_reason or "declined", utcnow()))
            raise Problem(402, "payment-declined", f"the card was declined ({result.decline_reason})")
        metrics.PAYMENTS.labels(self.payments.name, "succeeded").inc()
        payment = {"provider": self.payments.name, "payment_id": result.payment_id, "amount": result.amount,
                   "fee": result.fee}
        return 200, public_order(await self._confirm(order_id, attempt_id, payment, actor_of(principal), answer(200)))

    async def _confirm(self, order_id: str, attempt_id: str, payment: dict, actor: str, session_hook=None) -> dict:
        """Record a successful payment; money that arrives for an order no longer payable is refunded."""
        def change(order):
            if order.get("payment") and order["payment"]["payment_id"] == payment["payment_id"]:
                return None  # the same payment reported twice (callback after the synchronous answer)
            if order["status"] != PENDING_PAYMENT or order.get("payment"):
                refund = domain.new_refund(order, new_id("rfn"), payment["amount"], "late_payment")
                refund["payment_id"] = payment["payment_id"]
                order["pending_actions"] = [*order["pending_actions"], f"{saga.PAYMENT_REFUND}:{refund['id']}"]
                return "late"
            return domain.confirm_payment(order, payment, actor, utcnow())

        async def hook(session, order):
            if session_hook is not None and order["status"] != PENDING_PAYMENT and not _late(order):
                await session_hook(session, order)

        def _late(order):
            return any(r["reason"] == "late_payment" and r.get("payment_id") == payment["payment_id"]
                       for r in order.get("refunds", []))

        order, result = await self.mutate(order_id, change, session_hook=hook)
        if result == "late":
            metrics.PAYMENTS.labels(payment["provider"], "late_refunded").inc()
            raise Problem(409, "order-not-payable", f"the order is {order['status']}; the payment is refunded")
        if isinstance(result, domain.Change):
            metrics.ORDERS_PAID.labels(order["fulfilment"]["type"]).inc()
        return order

    async def payment_callback(self, body: dict) -> dict:
        order_id, attempt_id = body["order_id"], body["attempt_id"]
        if body["status"] == "succeeded":
            metrics.PAYMENTS.labels(self.payments.name, "succeeded").inc()
            payment = {"provider": self.payments.name, "payment_id": body["payment_id"], "amount": body["amount"],
                       "fee": body.get("fee", 0)}
            order = await self.repo.get_committed(order_id)
            if order is None:
                raise not_found("order")
            if order["totals"]["total"] != body["amount"]:
                raise Problem(422, "amount-mismatch", "the callback amount differs from the order total")
            try:
                order = await self._confirm(order_id, attempt_id, payment, "system:payments")
            except Problem as problem:
                if problem.type != "order-not-payable":
                    raise
                order = await self.repo.get_committed(order_id)
            return public_order(order)
        order, _ = await self.mutate(order_id, lambda o: domain.payment_failed(
            o, attempt_id, "declined", body.get("reason") or "declined by provider", utcnow()))
        metrics.PAYMENTS.labels(self.payments.name, "declined").inc()
        return public_order(order)

    # -- staff and member actions ---------------------------------------------------------------
    def _guard(self, principal: Principal, order: dict, allowed: Callable[[Principal, dict], bool]) -> None:
        if not can_see(principal, order) or order["status"] == PENDING:
            raise OrderError("not-found", "order not found", status=404)
        if not allowed(principal, order):
            raise OrderError("forbidden", "you may not do this to this order", status=403)

    async def cancel(self, principal: Principal, order_id: str, reason: str) -> dict:
        def change(order):
            self._guard(principal, order, lambda p, o: is_owner(p, o) or works_at_order_store(p, o))
            # A cancel wins over a charge in flight: money that arrives for a cancelled order is refunded.
            return domain.cancel(order, actor_of(principal), reason, new_id("rfn"), utcnow())

        order, _ = await self.mutate(order_id, change)
        metrics.ORDERS_CANCELLED.labels(order["fulfilment"]["type"], "customer" if principal.member_id else "staff").inc()
        return order

    async def ready_for_pickup(self, principal: Principal, order_id: str) -> tuple[dict, str]:
        code = pickup.new_code()

        def change(order):
            self._guard(principal, order, works_at_order_store)
            result = domain.ready_for_pickup(order, actor_of(principal), utcnow())
            pickup.issue(order, self.settings.pickup_code_secret, code)
            return result

        order, _ = await self.mutate(order_id, change, extra_events=lambda o, r: [
            ev.OrderReadyForPickup(**ev.order_fields(o), pickup_code=code)])
        return order, code

    async def reset_pickup_code(self, principal: Principal, order_id: str) -> tuple[dict, str]:
        code = pickup.new_code()

        def change(order):
            self._guard(principal, order, lambda p, o: p.is_admin or (
                p.has("store_manager") and works_at_order_store(p, o)))
            pickup.reset(order, self.settings.pickup_code_secret, code, actor_of(principal), utcnow())

        order, _ = await self.mutate(order_id, change, extra_events=lambda o, r: [
            ev.PickupCodeReissued(**ev.order_fields(o), pickup_code=code)])
        metrics.PICKUP_VERIFICATIONS.labels("reset").inc()
        return order, code

    async def pickup(self, principal: Principal, order_id: str, code: str) -> dict:
        def change(order):
            self._guard(principal, order, works_at_order_store)
            outcome = pickup.verify(order, code, self.settings.pickup_code_secret, self.settings.pickup_max_attempts)
            if outcome == pickup.PickupOutcome.ACCEPTED:
                return domain.picked_up(order, actor_of(principal), utcnow())
            pickup_state = order["pickup"]
            note_event(order, "pickup_code_refused", actor_of(principal), utcnow(),
                       note=f"attempt {pickup_state['failed_attempts']}")
            return outcome

        try:
            order, result = await self.mutate(order_id, change)
        except Problem as problem:
            if problem.type == "pickup-locked":
                metrics.PICKUP_VERIFICATIONS.labels("locked").inc()
            raise
        if isinstance(result, domain.Change):
            metrics.PICKUP_VERIFICATIONS.labels("accepted").inc()
            ready_at = [t["at"] for t in order["timeline"] if t["status"] == "ready_for_pickup"]
            if ready_at:
                waited = utcnow() - datetime.fromisoformat(ready_at[-1].replace("Z", "+00:00"))
                metrics.PICKUP_WAIT.observe(max(waited.total_seconds(), 0.0))
            return order
        metrics.PICKUP_VERIFICATIONS.labels(result).inc()
        left = max(self.settings.pickup_max_attempts - order["pickup"]["failed_attempts"], 0)
        if result == pickup.PickupOutcome.LOCKED_NOW:
            raise Problem(423, "pickup-locked", "wrong pickup code; too many attempts, the order is locked for "
                                                "handover until a store manager resets the code", attempts_left=0)
        raise Problem(422, "wrong-pickup-code", f"wrong pickup code; {left} attempts left", attempts_left=left)

    async def ship(self, principal: Principal, order_id: str, carrier: str, tracking_number: str) -> dict:
        def change(order):
            self._guard(principal, order, works_at_order_store)
            return domain.ship(order, carrier, tracking_number, actor_of(principal), utcnow())
        return (await self.mutate(order_id, change))[0]

    async def complete(self, principal: Principal, order_id: str) -> dict:
        def change(order):
            self._guard(principal, order, lambda p, o: is_owner(p, o) or works_at_order_store(p, o))
            return domain.complete(order, actor_of(principal), utcnow())
        return (await self.mutate(order_id, change))[0]

    async def request_return(self, principal: Principal, order_id: str, lines: list[dict], reason: str,
                             location_id: str | None, remember) -> dict:
        """A return request; the answer is stored under the Idempotency-Key in the same transaction."""
        return_id = new_id("ret")

        def change(order):
            # The owner asks online, or staff of ANY store open it at their counter (return anywhere).
            if not (can_see(principal, order) or (is_staff(principal) and location_id in principal.store_ids)) \
                    or order["status"] == PENDING:
                raise OrderError("not-found", "order not found", status=404)
            if not (is_owner(principal, order) or principal.is_admin or is_staff(principal)):
                raise OrderError("forbidden", "you may not return this order", status=403)
            record = domain.request_return(order, return_id, lines, reason, actor_of(principal), utcnow())
            if location_id:
                record["location_id"] = location_id
            return record

        def answer_of(order):
            return {"return": next(r for r in order["returns"] if r["id"] == return_id), "order": public_order(order)}

        async def remember_answer(session, order):
            await remember(session, 201, answer_of(order))

        order, record = await self.mutate(order_id, change, session_hook=remember_answer, extra_events=lambda o, r: [
            ev.ReturnRequested(**ev.order_fields(o), return_id=r["id"], return_lines=r["lines"], reason=r["reason"],
                               refund_amount=r["refund_amount"])])
        metrics.RETURNS.labels("requested").inc()
        return answer_of(order)

    async def receive_return(self, principal: Principal, order_id: str, return_id: str, location_id: str) -> dict:
        if not (principal.is_admin or (is_staff(principal) and location_id in principal.store_ids)):
            raise Problem(403, "forbidden", "returns are received by staff of the receiving store")

        def change(order):
            if order["status"] == PENDING:
                raise OrderError("not-found", "order not found", status=404)
            record, result = domain.receive_return(order, return_id, location_id, new_id("rfn"),
                                                   actor_of(principal), utcnow())
            return result

        def received_event(order, result):
            record = next(r for r in order["returns"] if r["id"] == return_id)
            return [ev.ReturnReceived(**ev.order_fields(order), return_id=return_id, return_lines=record["lines"],
                                      location_id=location_id, refund_amount=record["refund_amount"])]

        order, _ = await self.mutate(order_id, change, extra_events=received_event)
        metrics.RETURNS.labels("received").inc()
        return order

    # -- follow-up actions (saga steps after commit, compensations) -----------------------------
    def run_actions_soon(self, order_id: str) -> None:
        task = asyncio.create_task(self.run_actions(order_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def run_actions(self, order_id: str) -> int:
        """Run the order's pending actions; each is removed once it succeeded. Returns how many remain."""
        order = await self.repo.get_committed(order_id)
        if order is None:
            return 0
        remaining = 0
        for action in list(order.get("pending_actions", [])):
            name, argument = saga.split_action(action)
            try:
                outcome = await self._perform(order, name, argument)
            except Exception as exc:
                remaining += 1
                metrics.SAGA_ACTIONS.labels(name, "failed").inc()
                log.warning("orders.action_failed", order_id=order_id, action=action,
                            error=f"{type(exc).__name__}: {exc}"[:300])
                continue
            await self._finish(order_id, action, name, argument, outcome)
            metrics.SAGA_ACTIONS.labels(name, "done").inc()
        return remaining

    async def _perform(self, order: dict, name: str, argument: str | None):
        order_id = order["_id"]
        if name == saga.STOCK_RELEASE:
            await self.upstreams.reservation_action(order_id, "release")
        elif name == saga.STOCK_EXTEND:
            await self.upstreams.reservation_action(order_id, "extend", {"ttl_s": self.settings.paid_reservation_ttl_s})
        elif name == saga.STOCK_COMMIT:
            await self.upstreams.reservation_action(order_id, "commit")
        elif name == saga.BENEFITS_COMMIT:
            await self.upstreams.hold_action(order_id, "commit")
        elif name == saga.BENEFITS_RELEASE:
            await self.upstreams.hold_action(order_id, "release")
        elif name == saga.STOCK_RETURN:
            record = next(r for r in order["returns"] if r["id"] == argument)
            for line in record["lines"]:
                await self.upstreams.return_to_stock(record["location_id"], line["sku_id"], line["qty"],
                                                     key=f"{argument}:{line['sku_id']}")
        elif name == saga.PAYMENT_REFUND:
            refund = next(r for r in order["refunds"] if r["id"] == argument)
            if refund["state"] == "done":
                return refund["provider_refund_id"]
            payment_id = refund.get("payment_id") or order["payment"]["payment_id"]
            if refund["amount"] == 0 or payment_id.startswith("free_"):
                return "none"
            result = await self.payments.refund(payment_id=payment_id, refund_key=refund["id"], amount=refund["amount"])
            return result.refund_id
        else:
            raise ValueError(f"unknown action {name}")
        return None

    async def _finish(self, order_id: str, action: str, name: str, argument: str | None, outcome) -> None:
        refunded: dict = {}

        def change(order):
            domain.finish_action(order, action)
            if name == saga.PAYMENT_REFUND:
                refund = next(r for r in order["refunds"] if r["id"] == argument)
                if refund["state"] != "done":
                    domain.refund_done(order, argument, outcome, utcnow())
                    refunded["refund"] = refund

        def refund_event(order, _):
            refund = refunded.get("refund")
            if not refund or refund["reason"] == "late_payment":
                # Money that arrived for an order no longer payable never was the order's: nothing for
                # membership or settlement to undo (the payments metric counts it).
                return []
            record = next((r for r in order.get("returns", []) if r["id"] == refund.get("return_id")), None)
            return [ev.OrderRefunded(**ev.order_fields(order), refund_id=refund["id"], refund_amount=refund["amount"],
                                     reason=refund["reason"], return_id=refund.get("return_id"),
                                     return_lines=record["lines"] if record else [],
                                     provider_refund_id=refund["provider_refund_id"])]

        async def unit(session):
            order = await self.repo.get(order_id, session)
            if order is None or action not in order.get("pending_actions", []):
                return None
            change(order)
            await self.repo.save(order, session)
            for event in refund_event(order, None):
                await self.outbox.record(session, event, subject=order_id)
            return order

        await self.mongo.transaction(unit)
        if refunded.get("refund"):
            metrics.REFUNDED_FEN.labels(refunded["refund"]["reason"]).inc(refunded["refund"]["amount"])

    # -- reactions to other services' events -----------------------------------------------------
    async def on_reservation_expired(self, session, order_id: str) -> None:
        """Stock let the order's reservation expire: an unpaid order is cancelled (its benefits released);
        a paid one is left alone and logged (its stock was extended on payment; this is the rare race)."""
        order = await self.repo.get(order_id, session)
        if order is None or order["status"] != PENDING_PAYMENT:
            if order is not None and order.get("payment") and order["status"] not in ("cancelled", "completed"):
                log.warning("orders.paid_order_lost_its_reservation", order_id=order_id, status=order["status"])
                metrics.RESERVATIONS_LOST.inc()
            return
        change = domain.cancel(order, "system:stock-expiry", "the stock reservation expired", new_id("rfn"), utcnow())
        await self.repo.save(order, session)
        for event in self.events_for(order, change.events):
            await self.outbox.record(session, event, subject=order_id)
        fulfilment = order["fulfilment"]["type"]
        self.mongo.after_commit(lambda: metrics.ORDERS_CANCELLED.labels(fulfilment, "expired").inc())
        self.mongo.after_commit(lambda: self.run_actions_soon(order_id))

    # -- sweepers -------------------------------------------------------------------------------
    async def sweep(self) -> dict[str, int]:
        """One pass of every periodic duty; returns what it did (for logs and tests)."""
        now = utcnow()
        now_ms = epoch_ms(now)
        done = {"expired": 0, "uncollected": 0, "auto_completed": 0, "stuck_rejected": 0, "actions_retried": 0}

        for order_id in await self.repo.find_ids({"status": PENDING_PAYMENT, "expires_at_ms": {"$lt": now_ms}}):
            if await self._system_cancel(order_id, "payment window expired", "expired",
                                         skip_charging_ms=self.settings.payment_attempt_timeout_s * 1000):
                done["expired"] += 1
        uncollected_ms = now_ms - self.settings.uncollected_after_s * 1000
        for order_id in await self.repo.find_ids({"status": READY_FOR_PICKUP,
                                                  "status_changed_at_ms": {"$lt": uncollected_ms}}):
            if await self._system_cancel(order_id, "not collected in time", "uncollected"):
                done["uncollected"] += 1
        complete_ms = now_ms - self.settings.auto_complete_after_s * 1000
        for order_id in await self.repo.find_ids({"status": SHIPPED, "status_changed_at_ms": {"$lt": complete_ms}}):
            try:
                await self.mutate(order_id, lambda o: domain.complete(o, "system:auto-complete", utcnow()))
                done["auto_completed"] += 1
            except Problem:
                pass
        stuck_ms = now_ms - self.settings.stuck_checkout_after_s * 1000
        for order_id in await self.repo.find_ids({"status": PENDING, "created_at_ms": {"$lt": stuck_ms}}):
            try:
                # The process that ran this checkout died mid-saga: undo every planned step.
                await self.mutate(order_id, lambda o: domain.reject(o, "checkout interrupted", utcnow()))
                done["stuck_rejected"] += 1
            except Problem:
                pass
        waiting = await self.repo.find_ids({"has_pending_actions": True})
        metrics.ORDERS_WITH_PENDING_ACTIONS.set(len(waiting))
        for order_id in waiting:
            await self.run_actions(order_id)
            done["actions_retried"] += 1
        return done

    async def _system_cancel(self, order_id: str, reason: str, cause: str, skip_charging_ms: int = 0) -> bool:
        def change(order):
            if skip_charging_ms and domain.payment_in_flight(order, utcnow(), skip_charging_ms):
                return None  # a payment is being taken right now; look again next pass
            return domain.cancel(order, f"system:{cause}", reason, new_id("rfn"), utcnow())
        try:
            order, result = await self.mutate(order_id, change)
        except Problem:
            return False
        if result is None:
            return False
        metrics.ORDERS_CANCELLED.labels(order["fulfilment"]["type"], cause).inc()
        return True

    async def status_of(self, order_id: str) -> str | None:
        order = await self.repo.get_committed(order_id)
        return order["status"] if order else None
