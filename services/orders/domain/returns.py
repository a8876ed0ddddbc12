"""Returns at a store's counter: the proof the customer brings and who may take the return. Pure, no I/O.

Anyone may return at any store, but a clerk's word is not proof: the customer shows a return code (or its QR)
that the member's app asked for, short-lived, bound to the order and used once, or the order's payment
reference from the receipt (a guest sale has no app). A return that the goods bring to another store than the
one that sold them, or that refunds much, is taken by a manager of the receiving store.
"""
from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from libs.principal import Principal
from libs.refusal import FORBIDDEN
from services.orders.domain.lifecycle import RETURNABLE, OrderError, epoch_ms, note_event, rfc3339

RETURN_CODE_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"  # no 0/O, 1/I: read aloud or typed at a till
RETURN_CODE_LENGTH = 8
PROOF_RETURN_CODE, PROOF_PAYMENT = "return_code", "payment"
CROSS_STORE, HIGH_VALUE = "cross-store", "high-value"


def _digest(order_id: str, code: str) -> str:
    return hashlib.sha256(f"{order_id}:{code.strip().upper()}".encode()).hexdigest()


def issue_return_code(order: dict, code: str, actor: str, now: datetime, ttl_s: int) -> dict:
    """Bind a fresh return code to the order (only its digest is kept); the previous one stops working."""
    if order["status"] not in RETURNABLE:
        raise OrderError("not-returnable", f"a {order['status']} order cannot be returned",
                         current_status=order["status"])
    expires_at_ms = epoch_ms(now) + ttl_s * 1000
    order["return_code"] = {"digest": _digest(order["_id"], code), "expires_at_ms": expires_at_ms}
    note_event(order, "return_code_issued", actor, now)
    return {"order_id": order["_id"], "return_code": code, "expires_at": rfc3339(expires_at_ms)}


def wrong_proof() -> OrderError:
    return OrderError("wrong-return-proof", "the return code (expired or used?) or the payment reference does not "
                                            "match this order", kind=FORBIDDEN)


def check_proof(order: dict, proof: dict | None, now: datetime) -> str:
    """The kind of proof the customer brought; a return code is used up by it. Refused: 403."""
    proof = proof or {}
    if proof.get("return_code"):
        held = order.get("return_code") or {}
        if not held or held["expires_at_ms"] <= epoch_ms(now) or \
                not hmac.compare_digest(held["digest"], _digest(order["_id"], proof["return_code"])):
            raise wrong_proof()
        order["return_code"] = None
        return PROOF_RETURN_CODE
    if proof.get("payment_id"):
        paid = (order.get("payment") or {}).get("payment_id")
        if not paid or not hmac.compare_digest(str(paid), str(proof["payment_id"])):
            raise wrong_proof()
        return PROOF_PAYMENT
    raise OrderError("return-proof-required", "a return at the counter needs the customer's return code (from the "
                                              "member's app) or the order's payment reference", kind=FORBIDDEN)


def why_manager(order: dict, location_id: str, refund_amount: int, manager_above_fen: int) -> str | None:
    """Why a return at this counter needs a manager: goods to another store than the seller, or a big refund."""
    if location_id not in (order.get("store_ids") or []):
        return CROSS_STORE
    if refund_amount > manager_above_fen:
        return HIGH_VALUE
    return None


def authorise_counter(principal: Principal, order: dict, location_id: str, refund_amount: int,
                      manager_above_fen: int) -> None:
    """Store staff take a return at their own counter; cross-store and high-value ones only a manager of it."""
    reason = why_manager(order, location_id, refund_amount, manager_above_fen)
    if reason and not (principal.has("store_manager") and location_id in principal.store_ids):
        raise OrderError("manager-required", f"a {reason} return is taken by a manager of the receiving store",
                         kind=FORBIDDEN, reason=reason)
