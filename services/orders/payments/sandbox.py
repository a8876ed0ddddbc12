"""Sandbox payment provider: deterministic outcomes by test card number, no network.

Cards: 4242424242424242 succeeds, 4000000000000002 is declined, 4000000000000119 times out (the outcome
then arrives as a signed callback), 4000000000003220 is charged but the answer is lost on the way back (the
caller sees a timeout, the money is taken: only asking the provider tells). Charges and refunds are
idempotent by their keys, like a real PSP, and the provider side remembers its charges across restarts of
orders (they are kept in a collection of their own once `remember_in` is given one).
"""
from __future__ import annotations

import hashlib

from services.orders.domain.pricing import payment_fee
from services.orders.payments.port import ChargeResult, PaymentTimeout, RefundResult, verify_signature

CARD_SUCCESS = "4242424242424242"
CARD_DECLINE = "4000000000000002"
CARD_TIMEOUT = "4000000000000119"
CARD_ANSWER_LOST = "4000000000003220"


def _stable_id(prefix: str, *parts: str) -> str:
    return prefix + hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


class SandboxProvider:
    name = "sandbox"

    def __init__(self, webhook_secret: str, fee_per_10000: int = 60) -> None:
        self.webhook_secret = webhook_secret
        self.fee_per_10000 = fee_per_10000
        # The sandbox "provider side": charges by idempotency key (in memory, so per process; a real
        # provider keeps them, and its callbacks carry what a restarted process no longer knows).
        self._charges: dict[str, ChargeResult] = {}
        self._kept = None  # the provider's own records, when given a collection: they outlive the process

    def remember_in(self, collection) -> None:
        self._kept = collection

    async def charge(self, *, order_id: str, attempt_id: str, amount: int, card_number: str) -> ChargeResult:
        known = await self.find_charge(attempt_id)
        if known is not None:
            return known
        card = card_number.replace(" ", "")
        if card == CARD_TIMEOUT:
            raise PaymentTimeout(f"sandbox did not answer for {attempt_id}")
        if card in (CARD_SUCCESS, CARD_ANSWER_LOST):
            result = ChargeResult(True, self.payment_id_for(attempt_id), amount, payment_fee(amount, self.fee_per_10000))
        elif card == CARD_DECLINE:
            result = ChargeResult(False, None, amount, decline_reason="card_declined")
        else:
            result = ChargeResult(False, None, amount, decline_reason="unknown_test_card")
        await self._keep(attempt_id, order_id, result)
        if card == CARD_ANSWER_LOST:
            raise PaymentTimeout(f"sandbox charged {attempt_id} but the answer was lost")
        return result

    async def find_charge(self, attempt_id: str) -> ChargeResult | None:
        if attempt_id in self._charges:
            return self._charges[attempt_id]
        if self._kept is None:
            return None
        doc = await self._kept.find_one({"_id": attempt_id})
        return None if doc is None else ChargeResult(doc["succeeded"], doc.get("payment_id"), doc["amount"],
                                                     doc.get("fee", 0), doc.get("decline_reason"))

    async def _keep(self, attempt_id: str, order_id: str, result: ChargeResult) -> None:
        self._charges[attempt_id] = result
        if self._kept is not None:  # the provider's own database, not orders' unit of work
            await self._kept.update_one({"_id": attempt_id}, {"$set": {
                "order_id": order_id, "succeeded": result.succeeded, "payment_id": result.payment_id,
                "amount": result.amount, "fee": result.fee, "decline_reason": result.decline_reason}}, upsert=True)

    async def refund(self, *, payment_id: str, refund_key: str, amount: int) -> RefundResult:
        return RefundResult(_stable_id("rfd_sbx_", payment_id, refund_key), amount)

    def verify_callback(self, body: bytes, signature: str | None) -> bool:
        return verify_signature(self.webhook_secret, body, signature)

    def payment_id_for(self, attempt_id: str) -> str:
        return _stable_id("pay_sbx_", attempt_id)

    def fee_for(self, amount: int) -> int:
        return payment_fee(amount, self.fee_per_10000)
