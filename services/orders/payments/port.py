"""The payment provider port: the only thing orders knows about taking and returning money.

A provider charges an amount for an order, refunds (part of) a payment, and signs the callbacks it sends
when an outcome was not known at charge time (a timeout). Only the adapter behind this port knows which
provider it is; the rest of orders sees `ChargeResult` and `RefundResult`.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Protocol

SIGNATURE_HEADER = "X-Payment-Signature"


class PaymentTimeout(Exception):
    """The provider did not answer in time: the outcome is unknown until its callback arrives."""


@dataclass(frozen=True)
class ChargeResult:
    succeeded: bool
    payment_id: str | None
    amount: int
    fee: int = 0
    decline_reason: str | None = None


@dataclass(frozen=True)
class RefundResult:
    refund_id: str
    amount: int


class PaymentProvider(Protocol):
    name: str

    async def charge(self, *, order_id: str, attempt_id: str, amount: int, card_number: str) -> ChargeResult: ...

    async def find_charge(self, attempt_id: str) -> ChargeResult | None:
        """What became of a charge whose answer never arrived (looked up by its idempotency key)."""
        ...

    async def refund(self, *, payment_id: str, refund_key: str, amount: int) -> RefundResult: ...

    def verify_callback(self, body: bytes, signature: str | None) -> bool: ...


def sign(secret: str, body: bytes) -> str:
    """HMAC-SHA256 of the raw callback body, as `sha256=<hex>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, signature: str | None) -> bool:
    if not signature:
        return False
    return hmac.compare_digest(sign(secret, body), signature.strip())
