"""Sandbox payment provider: deterministic outcomes by test card number, no network.

Cards: 4242424242424242 succeeds, 4000000000000002 is declined, 4000000000000119 times out (the outcome
then arrives as a signed callback). Charges and refunds are idempotent by their keys, like a real PSP.
"""
from __future__ import annotations

import hashlib

from services.orders.domain.pricing import payment_fee
from services.orders.payments.port import ChargeResult, PaymentTimeout, RefundResult, verify_signature

CARD_SUCCESS = "4242424242424242"
CARD_DECLINE = "4000000000000002"
CARD_TIMEOUT = "4000000000000119"


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

    async def charge(self, *, order_id: str, attempt_id: str, amount: int, card_number: str) -> ChargeResult:
        if attempt_id in self._charges:
            return self._charges[attempt_id]
        card = card_number.replace(" ", "")
        if card == CARD_TIMEOUT:
            raise PaymentTimeout(f"sandbox did not answer for {attempt_id}")
        if card == CARD_SUCCESS:
            result = ChargeResult(True, self.payment_id_for(attempt_id), amount, payment_fee(amount, self.fee_per_10000))
        elif card == CARD_DECLINE:
            result = ChargeResult(False, None, amount, decline_reason="card_declined")
        else:
            result = ChargeResult(False, None, amount, decline_reason="unknown_test_card")
        self._charges[attempt_id] = result
        return result

    async def find_charge(self, attempt_id: str) -> ChargeResult | None:
        return self._charges.get(attempt_id)

    async def refund(self, *, payment_id: str, refund_key: str, amount: int) -> RefundResult:
        return RefundResult(_stable_id("rfd_sbx_", payment_id, refund_key), amount)

    def verify_callback(self, body: bytes, signature: str | None) -> bool:
        return verify_signature(self.webhook_secret, body, signature)

    def payment_id_for(self, attempt_id: str) -> str:
        return _stable_id("pay_sbx_", attempt_id)

    def fee_for(self, amount: int) -> int:
        return payment_fee(amount, self.fee_per_10000)
