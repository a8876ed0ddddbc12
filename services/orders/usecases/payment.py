"""Paying an order: the charge through the provider port (never twice for one order), the provider's
signed callbacks for outcomes not known at charge time, and the refund of money that arrived too late."""
from __future__ import annotations

from aiohttp import web

from libs.clock import utcnow
from libs.ids import new_id
from libs.principal import Principal
from libs.refusal import CONFLICT, INVALID, PAYMENT_REQUIRED, UNAVAILABLE, Refusal
from services.orders import metrics
from services.orders.domain import order as domain
from services.orders.domain import saga
from services.orders.domain.access import can_see, is_owner, works_at_order_store
from services.orders.domain.lifecycle import PENDING_PAYMENT, OrderError
from services.orders.domain.requests import RequestKey, stored_answer
from services.orders.payments.port import ChargeResult, PaymentTimeout
from services.orders.usecases.base import OrderFlow, actor_of, order_not_found
from services.orders.views import public_order


def check_payer(principal: Principal, order: dict) -> None:
    """The owner pays; in store, staff of the store take a guest's payment; HQ may."""
    if not can_see(principal, order) or not (
            is_owner(principal, order) or principal.is_admin or
            (order["member_id"] is None and works_at_order_store(principal, order))):
        raise order_not_found()


class Payments(OrderFlow):
    async def pay(self, principal: Principal, order_id: str, card_number: str,
                  key: RequestKey | None = None) -> tuple[int, dict, bool]:
        """Charge the order's total through the provider port. Returns (status, body, replayed). The
        Idempotency-Key (`key`) is kept in the order (`pay_requests`): claimed by the same single-document
        write that claims the payment attempt, answered by the one that records the outcome."""
        attempt_id = new_id("pat")
        stale_ms = self.settings.payment_attempt_timeout_s * 1000
        current = await self.repo.get_committed(order_id)
        if current is None:
            raise order_not_found()
        check_payer(principal, current)
        if key is not None:
            replay = stored_answer(_pay_request(current, key), key)
            if replay is not None:
                return (*replay, True)

        found = await self._earlier_charge(current, stale_ms)
        if found is not None:
            earlier_id, charge = found
            return 200, public_order(await self._confirm(order_id, earlier_id, self._payment_of(charge),
                                                         actor_of(principal), key)), False

        def claim(order):
            check_payer(principal, order)
            if key is not None:
                stored_answer(_pay_request(order, key), key)  # a duplicate got here first: 409 (or its answer)
                _keep_request(order, key, {"body_hash": key.body_hash, "attempt_id": attempt_id})
            domain.begin_payment(order, attempt_id, utcnow(), stale_ms)

        order, _ = await self.mutate_alone(order_id, claim, loaded=current)
        amount = order["totals"]["total"]
        if amount == 0:
            payment = {"provider": "none", "payment_id": f"free_{attempt_id}", "amount": 0, "fee": 0}
            return 200, public_order(await self._confirm(order_id, attempt_id, payment, actor_of(principal), key)), False
        try:
            result = await self.payments.charge(order_id=order_id, attempt_id=attempt_id, amount=amount,
                                                card_number=card_number)
        except PaymentTimeout:
            metrics.PAYMENTS.labels(self.payments.name, "timeout").inc()

            def unknown(o):
                domain.payment_failed(o, attempt_id, "unknown", "provider timeout; awaiting its callback", utcnow())
                _answer_request(o, key, 202)
            order, _ = await self.mutate_alone(order_id, unknown)
            return 202, public_order(order), False
        except Exception:
            await self._failed(order_id, attempt_id, "failed", "provider error", key)
            raise Refusal("payment-provider-error", "the payment provider failed; nothing was charged",
                          kind=UNAVAILABLE) from None
        if not result.succeeded:
            metrics.PAYMENTS.labels(self.payments.name, "declined").inc()
            await self._failed(order_id, attempt_id, "declined", result.decline_reason or "declined", key)
            raise OrderError("payment-declined", f"the card was declined ({result.decline_reason})",
                             kind=PAYMENT_REQUIRED)
        metrics.PAYMENTS.labels(self.payments.name, "succeeded").inc()
        return 200, public_order(await self._confirm(order_id, attempt_id, self._payment_of(result),
                                                     actor_of(principal), key, claimed=order)), False

    def _payment_of(self, charge: ChargeResult) -> dict:
        return {"provider": self.payments.name, "payment_id": charge.payment_id, "amount": charge.amount,
                "fee": charge.fee}

    async def _earlier_charge(self, current: dict, stale_ms: int) -> tuple[str, ChargeResult] | None:
        """The answer to an earlier charge never arrived: ask the provider before charging again."""
        earlier = domain.stale_attempt(current, utcnow(), stale_ms)
        if earlier is None:
            return None
        found = await self.payments.find_charge(earlier["id"])
        return (earlier["id"], found) if found is not None and found.succeeded else None

    async def _failed(self, order_id: str, attempt_id: str, state: str, reason: str,
                      key: RequestKey | None = None) -> dict:
        def change(order):
            domain.payment_failed(order, attempt_id, state, reason, utcnow())
            _forget_request(order, key)  # a refusal stores no answer: the key may be used again
        order, _ = await self.mutate_alone(order_id, change)
        return order

    async def _confirm(self, order_id: str, attempt_id: str, payment: dict, actor: str,
                       key: RequestKey | None = None, claimed: dict | None = None) -> dict:
        """Record a successful payment (one single-document write, the events and the stored answer in the
        order); money that arrives for an order no longer payable is refunded."""
        def change(order):
            if order.get("payment") and order["payment"]["payment_id"] == payment["payment_id"]:
                _answer_request(order, key, 200)
                return None  # the same payment reported twice (callback after the synchronous answer)
            if order["status"] != PENDING_PAYMENT or order.get("payment"):
                refund = domain.new_refund(order, new_id("rfn"), payment["amount"], "late_payment")
                refund["payment_id"] = payment["payment_id"]
                order["pending_actions"] = [*order["pending_actions"], f"{saga.PAYMENT_REFUND}:{refund['id']}"]
                _forget_request(order, key)
                return "late"
            confirmed = domain.confirm_payment(order, payment, actor, utcnow())
            _answer_request(order, key, 200)
            return confirmed

        order, result = await self.mutate_alone(order_id, change, loaded=claimed)
        if result == "late":
            metrics.PAYMENTS.labels(payment["provider"], "late_refunded").inc()
            raise OrderError("order-not-payable", f"the order is {order['status']}; the payment is refunded",
                             kind=CONFLICT)
        if isinstance(result, domain.Change):
            metrics.ORDERS_PAID.labels(order["fulfilment"]["type"]).inc()
        return order

    async def resolve_unanswered(self, order_id: str) -> str:
        """Before an unpaid order is cancelled: ask the provider what became of a charge whose answer never
        came back. Taken → the order is confirmed with it (no charge without an order); declined or never
        taken → the attempt is closed, and the caller may cancel. Returns "paid", "not-charged" or "none"."""
        order = await self.repo.get_committed(order_id)
        attempt = (order or {}).get("payment_attempt") or {}
        if order is None or order["status"] != PENDING_PAYMENT or attempt.get("state") not in ("charging", "unknown"):
            return "none"
        charge = await self.payments.find_charge(attempt["id"])
        if charge is not None and charge.succeeded:
            metrics.PAYMENTS.labels(self.payments.name, "found_after_lost_answer").inc()
            try:
                await self._confirm(order_id, attempt["id"], self._payment_of(charge), "system:payments")
            except Refusal as refusal:
                if refusal.code != "order-not-payable":  # refunded as a late payment then: also no loss
                    raise
            return "paid"
        reason = charge.decline_reason if charge is not None else "never reached the provider"
        await self._failed(order_id, attempt["id"], "declined" if charge is not None else "failed", reason or "declined")
        return "not-charged"

    async def callback(self, body: dict) -> dict:
        """The provider tells an outcome it could not tell at charge time (the signature is checked first).
        It must name a payment attempt this order really made: a signed body alone never pays an order."""
        order_id, attempt_id = body["order_id"], body["attempt_id"]
        order = await self.repo.get_committed(order_id)
        if order is None:
            raise order_not_found()
        try:
            domain.check_attempt_of(order, attempt_id)
        except OrderError:
            metrics.PAYMENTS.labels(self.payments.name, "callback_refused").inc()
            raise
        if body["status"] != "succeeded":
            order = await self._failed(order_id, attempt_id, "declined", body.get("reason") or "declined by provider")
            metrics.PAYMENTS.labels(self.payments.name, "declined").inc()
            return public_order(order)
        if order["totals"]["total"] != body["amount"]:
            raise OrderError("amount-mismatch", "the callback amount differs from the order total", kind=INVALID)
        metrics.PAYMENTS.labels(self.payments.name, "succeeded").inc()
        payment = {"provider": self.payments.name, "payment_id": body["payment_id"], "amount": body["amount"],
                   "fee": body.get("fee", 0)}
        try:
            order = await self._confirm(order_id, attempt_id, payment, "system:payments")
        except Refusal as refusal:
            if refusal.code != "order-not-payable":
                raise
            order = await self.repo.get_committed(order_id)
        return public_order(order)


def _pay_request(order: dict, key: RequestKey) -> dict | None:
    return (order.get("pay_requests") or {}).get(key.digest)


def _keep_request(order: dict, key: RequestKey, record: dict) -> None:
    order["pay_requests"] = {**(order.get("pay_requests") or {}), key.digest: record}


def _answer_request(order: dict, key: RequestKey | None, status: int) -> None:
    """The answer a retry of this /pay with the same key gets (stored with the outcome it tells)."""
    if key is not None and _pay_request(order, key) is not None:
        _keep_request(order, key, {**_pay_request(order, key), "status": status, "body": public_order(order)})


def _forget_request(order: dict, key: RequestKey | None) -> None:
    if key is not None and _pay_request(order, key) is not None:
        order["pay_requests"] = {k: v for k, v in order["pay_requests"].items() if k != key.digest}


PAYMENTS = web.AppKey("orders.payments", Payments)
