"""The order aggregate's operations: each changes the order (a plain dict, the stored document) in
memory and says which follow-up actions and which integration events the change produces.

No I/O here: the application layer loads the order, calls one of these, and saves the result together
with the events in one transaction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from libs.refusal import CONFLICT, INVALID, NOT_FOUND
from services.orders.domain import saga
from services.orders.domain.lifecycle import (ALLOCATED, CANCELLED, COMPLETED, CONFIRMED, PENDING, PENDING_PAYMENT,
                                              PICKED_UP, READY_FOR_PICKUP, REFUNDED, REJECTED, RETURNABLE, SHIPPED,
                                              OrderError, epoch_ms, note_event, rfc3339, transition)
from services.orders.domain.pricing import refund_for


@dataclass
class Change:
    """What a domain operation produced: event names (mapped to event models by the app) and actions."""
    events: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)


def new_order(order_id: str, *, member_id: str | None, channel: str, fulfilment: dict, lines: list[dict],
              requested_lines: list[dict], coupon_codes: list[str], points: int, attribution: dict,
              created_by: str, now: datetime) -> dict:
    """The order as recorded before the saga's first step (status pending)."""
    if fulfilment["type"] == "in_store" and channel != "store":
        raise OrderError("channel-mismatch", "an in_store order is sold on the 'store' channel", kind=INVALID)
    if fulfilment["type"] != "in_store" and channel == "store":
        raise OrderError("channel-mismatch", "the 'store' channel is for in_store orders", kind=INVALID)
    return {
        "_id": order_id, "status": PENDING, "member_id": member_id, "channel": channel,
        "fulfilment": dict(fulfilment), "lines": lines, "requested_lines": requested_lines,
        "coupon_codes": list(coupon_codes), "points_requested": points, "points": 0, "attribution": attribution,
        "totals": None, "saga": {"started": []}, "pending_actions": [], "benefits_held": False,
        "payment": None, "refunds": [], "returns": [], "created_by": created_by,
        "created_at": rfc3339(now), "created_at_ms": epoch_ms(now), "updated_at": rfc3339(now),
        "status_changed_at_ms": epoch_ms(now), "timeline": [],
    }


def place(order: dict, *, lines: list[dict], totals: dict, reservation: dict, benefits: dict | None,
          expires_at: datetime, now: datetime) -> Change:
    """Stock reserved and benefits held: the order is placed and waits for payment until `expires_at`."""
    order["lines"] = lines
    order["totals"] = totals
    allocations = reservation.get("allocations") or []
    order["reservation_id"] = reservation.get("reservation_id")
    order["allocations"] = allocations
    if order["fulfilment"]["type"] != "ship" or allocations:
        first = allocations[0] if allocations else {}
        location_id = order["fulfilment"].get("location_id") or first.get("location_id")
        order["fulfilment"].update({"location_id": location_id, "ownership": first.get("ownership"),
                                    "franchisee_id": first.get("franchisee_id")})
    order["store_ids"] = sorted({a["location_id"] for a in allocations} |
                                ({order["fulfilment"]["location_id"]} if order["fulfilment"].get("location_id") else set()))
    order["benefits_held"] = benefits is not None
    order["benefits"] = benefits
    order["points"] = int((benefits or {}).get("points_used", 0))  # what was redeemed, not what was asked for
    order["expires_at"] = rfc3339(expires_at)
    order["expires_at_ms"] = epoch_ms(expires_at)
    transition(order, PENDING_PAYMENT, "system:checkout", now)
    return Change(events=["placed"])


def reject(order: dict, reason: str, now: datetime) -> Change:
    """The saga failed before the order was placed: undo what was started."""
    order["rejection"] = reason
    order.pop("checkout_key", None)  # a refusal stores no answer: the Idempotency-Key may be used again
    transition(order, REJECTED, "system:checkout", now, note=reason)
    actions = saga.compensations(order["saga"]["started"])
    order["pending_actions"] = [*order["pending_actions"], *actions]
    return Change(events=["rejected"], actions=actions)


def undo_late_steps(order: dict, done: list[str]) -> Change | None:
    """The order was rejected while its checkout was still running (the sweeper took the checkout for
    dead): what this checkout did after the rejection's compensations ran is undone as well."""
    wanted = [a for a in saga.compensations(done) if a not in order["pending_actions"]]
    if not wanted:
        return None
    order["pending_actions"] = [*order["pending_actions"], *wanted]
    return Change(actions=wanted)


def _started_ms(attempt: dict) -> int:
    return epoch_ms(datetime.fromisoformat(attempt["started_at"].replace("Z", "+00:00")))


def payment_in_flight(order: dict, now: datetime, stale_after_ms: int) -> bool:
    """A charge is being taken right now (not one whose process died: that one is stale after a while)."""
    attempt = order.get("payment_attempt") or {}
    return attempt.get("state") == "charging" and epoch_ms(now) - _started_ms(attempt) < stale_after_ms


def stale_attempt(order: dict, now: datetime, stale_after_ms: int) -> dict | None:
    """An attempt whose outcome never came back (process died mid-charge, or the provider timed out)."""
    attempt = order.get("payment_attempt") or {}
    if attempt.get("state") in ("charging", "unknown") and epoch_ms(now) - _started_ms(attempt) >= stale_after_ms:
        return attempt
    return None


def begin_payment(order: dict, attempt_id: str, now: datetime, stale_after_ms: int = 120_000) -> None:
    """Claim the order for one payment attempt, so two concurrent /pay calls never charge twice.

    An attempt whose outcome is still unknown blocks a new one until it is stale; the caller asks the
    provider about a stale one first (it may have succeeded), and only then starts a new attempt.
    """
    if order["status"] != PENDING_PAYMENT:
        raise OrderError("illegal-transition", f"the order is {order['status']} and cannot be paid",
                         current_status=order["status"], requested_status=CONFIRMED)
    if order["expires_at_ms"] <= epoch_ms(now):
        raise OrderError("order-expired", "the payment window of this order has closed")
    current = order.get("payment_attempt")
    if current and current.get("state") in ("charging", "unknown"):
        if stale_attempt(order, now, stale_after_ms) is None:
            raise OrderError("payment-in-progress", "a payment for this order is already in progress")
        order["abandoned_attempts"] = [*order.get("abandoned_attempts", []), current["id"]]
    order["payment_attempt"] = {"id": attempt_id, "state": "charging", "started_at": rfc3339(now)}


def check_attempt_of(order: dict, attempt_id: str) -> None:
    """A provider callback speaks of one of this order's own payment attempts (the current one or one given up
    on), never of an attempt made up by the sender or belonging to another order."""
    current = (order.get("payment_attempt") or {}).get("id")
    if attempt_id != current and attempt_id not in order.get("abandoned_attempts", []):
        raise OrderError("unknown-payment-attempt", "the callback names no payment attempt of this order",
                         kind=CONFLICT)


def payment_failed(order: dict, attempt_id: str, state: str, reason: str, now: datetime) -> None:
    attempt = order.get("payment_attempt") or {}
    if attempt.get("id") == attempt_id:
        attempt.update({"state": state, "reason": reason})
        order["payment_attempt"] = attempt
    note_event(order, f"payment_{state}", "system:payments", now, note=reason)


def confirm_payment(order: dict, payment: dict, actor: str, now: datetime) -> Change:
    """Paid: confirmed; a ship order is allocated at once (stock already routed it); in store, completed."""
    transition(order, CONFIRMED, actor, now)
    order["payment"] = payment
    if order.get("payment_attempt"):
        order["payment_attempt"]["state"] = "succeeded"
    order["paid_at"] = rfc3339(now)
    change = Change(events=["confirmed"], actions=saga.on_confirmed(order))
    kind = order["fulfilment"]["type"]
    if kind == "ship":
        transition(order, ALLOCATED, "system:routing", now)
        change.events.append("allocated")
    elif kind == "in_store":
        transition(order, COMPLETED, actor, now)
        change.events.append("completed")
    order["pending_actions"] = [*order["pending_actions"], *change.actions]
    return change


def new_refund(order: dict, refund_id: str, amount: int, reason: str, return_id: str | None = None) -> dict:
    refund = {"id": refund_id, "amount": amount, "reason": reason, "return_id": return_id, "state": "pending",
              "provider_refund_id": None}
    order["refunds"] = [*order.get("refunds", []), refund]
    return refund


def cancel(order: dict, actor: str, reason: str, refund_id: str, now: datetime) -> Change:
    """Cancel before shipment or handover; everything held is given back and a paid order is refunded."""
    paid = order.get("payment") is not None
    transition(order, CANCELLED, actor, now, note=reason)
    order["cancellation"] = {"reason": reason, "actor": actor}
    refund = new_refund(order, refund_id, order["payment"]["amount"], "cancel") if paid else None
    actions = saga.on_cancelled(order, refund["id"] if refund else None)
    order["pending_actions"] = [*order["pending_actions"], *actions]
    return Change(events=["cancelled"], actions=actions)


def ship(order: dict, carrier: str, tracking_number: str, actor: str, now: datetime) -> Change:
    transition(order, SHIPPED, actor, now)
    order["shipment"] = {"carrier": carrier, "tracking_number": tracking_number, "shipped_at": rfc3339(now)}
    actions = saga.on_handover(order)
    order["pending_actions"] = [*order["pending_actions"], *actions]
    return Change(events=["shipped"], actions=actions)


def ready_for_pickup(order: dict, actor: str, now: datetime, collect_within: timedelta) -> Change:
    """The goods wait at the store until `collect_by`; after that the order is cancelled and refunded."""
    transition(order, READY_FOR_PICKUP, actor, now)
    order["ready_at_ms"] = epoch_ms(now)
    order["collect_by"] = rfc3339(now + collect_within)
    order["collect_by_ms"] = epoch_ms(now + collect_within)
    return Change(events=["ready_for_pickup"])


def picked_up(order: dict, actor: str, now: datetime) -> Change:
    """Handover verified: the goods leave the store and the order is complete."""
    transition(order, PICKED_UP, actor, now)
    transition(order, COMPLETED, actor, now)
    actions = saga.on_handover(order)
    order["pending_actions"] = [*order["pending_actions"], *actions]
    return Change(events=["picked_up", "completed"], actions=actions)


def complete(order: dict, actor: str, now: datetime) -> Change:
    """Delivery confirmed (or the auto-complete delay passed)."""
    if order["status"] != SHIPPED:
        raise OrderError("illegal-transition", f"the order is {order['status']}; only a shipped order completes",
                         current_status=order["status"], requested_status=COMPLETED)
    transition(order, COMPLETED, actor, now)
    return Change(events=["completed"])


# -- returns --------------------------------------------------------------------------------------

def _returned_qty(order: dict, sku_id: str) -> int:
    return sum(line["qty"] for r in order.get("returns", []) for line in r["lines"] if line["sku_id"] == sku_id)


def request_return(order: dict, return_id: str, lines: list[dict], reason: str, actor: str, now: datetime) -> dict:
    """A (partial) return: quantities within what was bought and not already returned; refund computed now."""
    if order["status"] not in RETURNABLE:
        raise OrderError("not-returnable", f"a {order['status']} order cannot be returned",
                         current_status=order["status"])
    by_sku = {line["sku_id"]: line for line in order["lines"]}
    wanted: dict[str, int] = {}
    for line in lines:
        if line["sku_id"] not in by_sku:
            raise OrderError("not-in-order", f"{line['sku_id']} is not part of this order", kind=INVALID)
        wanted[line["sku_id"]] = wanted.get(line["sku_id"], 0) + int(line["qty"])
    return_lines, amount = [], 0
    for sku_id, qty in wanted.items():
        line = by_sku[sku_id]
        refund = refund_for(line, _returned_qty(order, sku_id), qty)
        amount += refund
        return_lines.append({"sku_id": sku_id, "product_id": line.get("product_id"), "category": line.get("category"),
                             "qty": qty, "unit_price": line["unit_price"], "refund": refund})
    record = {"id": return_id, "status": "requested", "lines": return_lines, "reason": reason,
              "refund_amount": amount, "requested_at": rfc3339(now), "requested_by": actor}
    order["returns"] = [*order.get("returns", []), record]
    note_event(order, "return_requested", actor, now, note=return_id)
    return record


def receive_return(order: dict, return_id: str, location_id: str, refund_id: str, actor: str,
                   now: datetime) -> tuple[dict, Change]:
    """Goods back at a store: stock goes back there, the refund is issued; all returned -> refunded."""
    record = next((r for r in order.get("returns", []) if r["id"] == return_id), None)
    if record is None:
        raise OrderError("not-found", "no such return on this order", kind=NOT_FOUND)
    if record["status"] != "requested":
        raise OrderError("illegal-transition", f"the return is already {record['status']}",
                         current_status=record["status"], requested_status="received")
    record.update({"status": "received", "location_id": location_id, "received_at": rfc3339(now),
                   "received_by": actor})
    paid = order.get("payment") is not None and record["refund_amount"] > 0
    refund = new_refund(order, refund_id, record["refund_amount"], "return", return_id) if paid else None
    record["refund_id"] = refund["id"] if refund else None
    note_event(order, "return_received", actor, now, note=return_id)
    change = Change(events=["return_received"], actions=saga.on_return_received(return_id, record["refund_id"]))
    received = {line["sku_id"]: 0 for line in order["lines"]}
    for r in order["returns"]:
        if r["status"] == "received":
            for line in r["lines"]:
                received[line["sku_id"]] += line["qty"]
    if all(received[line["sku_id"]] >= line["qty"] for line in order["lines"]):
        transition(order, REFUNDED, actor, now)
    order["pending_actions"] = [*order["pending_actions"], *change.actions]
    return record, change


def refund_done(order: dict, refund_id: str, provider_refund_id: str, now: datetime) -> dict:
    refund = next(r for r in order["refunds"] if r["id"] == refund_id)
    refund.update({"state": "done", "provider_refund_id": provider_refund_id, "done_at": rfc3339(now)})
    note_event(order, "refunded", "system:payments", now, note=refund_id)
    return refund


def finish_action(order: dict, action: str) -> None:
    """Drop one executed action (the first occurrence)."""
    pending = list(order.get("pending_actions", []))
    if action in pending:
        pending.remove(action)
    order["pending_actions"] = pending
