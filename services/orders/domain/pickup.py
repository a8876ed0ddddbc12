"""Pickup codes: 6 digits, checked against a keyed hash, with a limit on wrong attempts.

The code never travels on the bus: when notifications delivers the ready_for_pickup message it asks orders
for the code (an internal call with its service token). So the order keeps the code sealed (AES-GCM under a
key derived from the pickup secret, bound to the order id) beside its HMAC: reading the database reveals no
code. After `max_attempts` wrong codes the order is locked for handover until a store manager resets it
(which issues a new code).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

from libs.refusal import CONFLICT, LOCKED
from libs.sealing import seal, unseal
from services.orders.domain.lifecycle import READY_FOR_PICKUP, OrderError, note_event

CODE_DIGITS = 6
SEALED_FOR = "pickup-code"


def new_code(randbelow=secrets.randbelow) -> str:
    return f"{randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def hash_code(secret: str, order_id: str, code: str) -> str:
    """Keyed hash bound to the order, so one order's hash says nothing about another's code."""
    return hmac.new(secret.encode(), f"{order_id}:{code}".encode(), hashlib.sha256).hexdigest()


def issue(order: dict, secret: str, code: str) -> dict:
    order["pickup"] = {"code_hash": hash_code(secret, order["_id"], code),
                       "code_sealed": seal(secret, SEALED_FOR, order["_id"], code), "failed_attempts": 0,
                       "locked": False}
    return order


def code_to_send(order: dict, secret: str) -> str:
    """The code for the member's message, while the order waits at the store and is not locked."""
    state = order.get("pickup") or {}
    if order["status"] != READY_FOR_PICKUP or state.get("locked") or not state.get("code_sealed"):
        raise OrderError("no-pickup-code", "this order has no pickup code to send now", kind=CONFLICT)
    code = unseal(secret, SEALED_FOR, order["_id"], state["code_sealed"])
    if code is None:
        raise OrderError("no-pickup-code", "the pickup code cannot be opened with this secret", kind=CONFLICT)
    return code


class PickupOutcome:
    ACCEPTED = "accepted"
    REFUSED = "refused"
    LOCKED_NOW = "locked_now"


def verify(order: dict, code: str, secret: str, max_attempts: int) -> str:
    """Check a code presented at handover and count a wrong one. Mutates order["pickup"].

    Raises when the order is not ready or already locked; returns ACCEPTED, REFUSED or LOCKED_NOW.
    """
    if order["status"] != READY_FOR_PICKUP:
        raise OrderError("illegal-transition", f"the order is {order['status']}, not ready for pickup",
                         current_status=order["status"], requested_status="picked_up")
    state = order.get("pickup") or {}
    if state.get("locked"):
        raise OrderError("pickup-locked", "too many wrong pickup codes; a store manager must reset the code",
                         kind=LOCKED)
    normalized = code.strip()
    expected = state.get("code_hash", "")
    if len(normalized) == CODE_DIGITS and normalized.isdigit() and \
            hmac.compare_digest(hash_code(secret, order["_id"], normalized), expected):
        return PickupOutcome.ACCEPTED
    state["failed_attempts"] = int(state.get("failed_attempts", 0)) + 1
    if state["failed_attempts"] >= max_attempts:
        state["locked"] = True
        order["pickup"] = state
        return PickupOutcome.LOCKED_NOW
    order["pickup"] = state
    return PickupOutcome.REFUSED


def reset(order: dict, secret: str, code: str, actor: str, now: datetime) -> dict:
    """A manager resets a (locked) pickup: a fresh code, attempts back to zero."""
    if order["status"] != READY_FOR_PICKUP:
        raise OrderError("illegal-transition", f"the order is {order['status']}, not ready for pickup",
                         current_status=order["status"], requested_status=READY_FOR_PICKUP)
    issue(order, secret, code)
    return note_event(order, "pickup_code_reset", actor, now)
