"""Every event the end-to-end run published validates against the AsyncAPI document.

Named to run after the flow tests in this folder, so the log holds what they produced."""
from __future__ import annotations

from scripts.asyncapi import validate_event

# The flows above must have produced at least these (a missing one means a flow or a publisher broke).
EXPECTED = {
    "orders.order.placed", "orders.order.confirmed", "orders.order.ready_for_pickup", "orders.order.picked_up",
    "orders.order.allocated", "orders.order.shipped", "orders.order.completed", "orders.order.cancelled",
    "orders.return.requested", "orders.return.received", "orders.order.refunded",
    "stock.reserved", "stock.committed", "stock.released", "stock.reservation_rejected",
    "membership.member.registered", "membership.coupon.issued", "membership.points.changed",
    "settlement.entries.posted",
}


def test_every_published_event_matches_the_asyncapi_contract(event_log, suite):
    events = list(event_log)
    assert events, "no event was captured from the bus"
    failures = []
    for envelope in events:
        try:
            validate_event(envelope)
        except AssertionError as exc:
            failures.append(str(exc)[:300])
    assert not failures, f"{len(failures)} of {len(events)} events violate the contract: {failures[:5]}"
    seen = {e["type"] for e in events}
    assert EXPECTED <= seen, f"never published: {sorted(EXPECTED - seen)}"
