"""Order state machine per fulfilment type: pure rules, no I/O.

`pending` is the checkout saga in progress (the order is not visible as placed yet); `rejected` means the
saga failed before the order was placed (sold out, coupon unavailable, ...). From `pending_payment` on,
each fulfilment type has its own path; an illegal transition is an `OrderError("illegal-transition")`
(a CONFLICT refusal).
"""
from __future__ import annotations

from datetime import datetime

from libs.clock import rfc3339, to_ms
from libs.refusal import CONFLICT, Refusal

FULFILMENTS = ("ship", "pickup", "in_store")
CHANNELS = ("app", "mini_program", "marketplace", "store")

PENDING = "pending"
REJECTED = "rejected"
PENDING_PAYMENT = "pending_payment"
CONFIRMED = "confirmed"
ALLOCATED = "allocated"
SHIPPED = "shipped"
READY_FOR_PICKUP = "ready_for_pickup"
PICKED_UP = "picked_up"
COMPLETED = "completed"
CANCELLED = "cancelled"
REFUNDED = "refunded"

_COMMON = {
    PENDING: {PENDING_PAYMENT, REJECTED},
    PENDING_PAYMENT: {CONFIRMED, CANCELLED},
    REJECTED: set(),
    CANCELLED: set(),
    REFUNDED: set(),
}
TRANSITIONS: dict[str, dict[str, set[str]]] = {
    "ship": {**_COMMON,
             CONFIRMED: {ALLOCATED, CANCELLED},
             ALLOCATED: {SHIPPED, CANCELLED},
             SHIPPED: {COMPLETED},
             COMPLETED: {REFUNDED}},
    "pickup": {**_COMMON,
               CONFIRMED: {READY_FOR_PICKUP, CANCELLED},
               READY_FOR_PICKUP: {PICKED_UP, CANCELLED},
               PICKED_UP: {COMPLETED},
               COMPLETED: {REFUNDED}},
    "in_store": {**_COMMON,
                 CONFIRMED: {COMPLETED},
                 COMPLETED: {REFUNDED}},
}
# Statuses in which a store still has work to do (the store views list these first).
STORE_WORK = {"ship": (CONFIRMED, ALLOCATED), "pickup": (CONFIRMED, READY_FOR_PICKUP), "in_store": ()}
RETURNABLE = (COMPLETED,)


class OrderError(Refusal):
    """A business rule of orders said no: `code` is the problem type, the kind says how (CONFLICT by default)."""

    default_kind = CONFLICT


def epoch_ms(moment: datetime) -> int:
    return to_ms(moment)



def can_transition(fulfilment: str, current: str, target: str) -> bool:
    return target in TRANSITIONS[fulfilment].get(current, set())


def transition(order: dict, target: str, actor: str, now: datetime, note: str | None = None) -> dict:
    """Move `order` to `target`, appending a timeline entry; raises OrderError on an illegal move."""
    fulfilment = order["fulfilment"]["type"]
    current = order["status"]
    if not can_transition(fulfilment, current, target):
        raise OrderError("illegal-transition",
                         f"a {fulfilment} order that is {current} cannot become {target}",
                         current_status=current, requested_status=target)
    order["status"] = target
    entry = {"status": target, "at": rfc3339(now), "actor": actor}
    if note:
        entry["note"] = note
    order["timeline"] = [*order.get("timeline", []), entry]
    order["status_changed_at_ms"] = epoch_ms(now)
    order["updated_at"] = rfc3339(now)
    return order


def note_event(order: dict, what: str, actor: str, now: datetime, note: str | None = None) -> dict:
    """A timeline entry that is not a status change (pickup code issued, return requested, ...)."""
    entry = {"status": order["status"], "event": what, "at": rfc3339(now), "actor": actor}
    if note:
        entry["note"] = note
    order["timeline"] = [*order.get("timeline", []), entry]
    order["updated_at"] = rfc3339(now)
    return order


def cancellable(order: dict) -> bool:
    return can_transition(order["fulfilment"]["type"], order["status"], CANCELLED)
