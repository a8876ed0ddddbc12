"""orders.order.cancelled as a safety net: releases the order's stock exactly once, even when redelivered."""
import uuid
from datetime import UTC, datetime

from tests.support import eventually

SKU = "sku_cancel_tee"


def cancelled(order_id: str, event_id: str | None = None) -> dict:
    return {"id": event_id or str(uuid.uuid4()), "type": "orders.order.cancelled", "version": 1, "source": "orders",
            "occurred_at": datetime.now(UTC).isoformat(), "subject": order_id, "correlation_id": "test",
            "causation_id": None, "data": {"order_id": order_id, "reason": "customer"}}


async def test_cancelled_order_releases_its_reservation_once_despite_redelivery(stock_api, publish, event_tap):
    await event_tap.start("stock.released")
    loc = (await stock_api.location(id=f"loc_cx_{uuid.uuid4().hex[:6]}", name="cx", lat=31.2, lng=121.4,
                                    daily_capacity=1))["id"]
    await stock_api.stock_up(loc, SKU, 4)
    order = f"ord_{uuid.uuid4().hex[:10]}"
    status, _ = await stock_api.reserve({"order_id": order, "mode": "ship", "lines": [{"sku_id": SKU, "qty": 3}],
                                         "destination": {"lat": 31.2, "lng": 121.4}})
    assert status == 201
    event = cancelled(order)
    # The same event twice (a broker redelivery) and a second cancellation event for the same order.
    for envelope in (event, event, cancelled(order)):
        await publish(envelope)

    async def released():
        _, doc, _ = await stock_api.call("GET", f"/stock/internal/reservations/{order}", stock_api.service)
        return doc["status"] == "released" and doc["release_reason"] == "order_cancelled"

    await eventually(released)
    # All three messages handled (inbox records the event ids it processed).
    inbox = stock_api.db["inbox"]
    await eventually(lambda: inbox.count_documents({"type": "orders.order.cancelled"}))

    async def all_handled():
        return await inbox.count_documents({"_id": {"$in": [event["id"]]}}) == 1 and \
            await inbox.count_documents({"type": "orders.order.cancelled"}) == 2

    await eventually(all_handled)
    level = await stock_api.level(loc, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (4, 0, 4)
    await eventually(lambda: event_tap.of("stock.released", order_id=order))
    assert len(event_tap.of("stock.released", order_id=order)) == 1
    # Capacity (1 per day) came back exactly once: one more ship order fits, the next does not.
    ship = lambda: {"order_id": f"ord_{uuid.uuid4().hex[:10]}", "mode": "ship", "lines": [{"sku_id": SKU, "qty": 1}],
                    "destination": {"lat": 31.2, "lng": 121.4}}
    assert (await stock_api.reserve(ship()))[0] == 201
    assert (await stock_api.reserve(ship()))[0] == 409


async def test_cancellation_of_an_unknown_or_committed_order_is_handled_without_effect(stock_api, publish):
    loc = (await stock_api.location(id=f"loc_cy_{uuid.uuid4().hex[:6]}", name="cy", lat=31.2, lng=121.4))["id"]
    await stock_api.stock_up(loc, SKU, 2)
    order = f"ord_{uuid.uuid4().hex[:10]}"
    assert (await stock_api.reserve({"order_id": order, "mode": "in_store", "location_id": loc,
                                     "lines": [{"sku_id": SKU, "qty": 1}]}))[0] == 201
    status, _, _ = await stock_api.call("POST", f"/stock/internal/reservations/{order}/commit", stock_api.service)
    assert status == 200
    unknown, committed = cancelled(f"ord_{uuid.uuid4().hex[:10]}"), cancelled(order)
    await publish(unknown)
    await publish(committed)
    inbox = stock_api.db["inbox"]

    async def both_handled():
        return await inbox.count_documents({"_id": {"$in": [unknown["id"], committed["id"]]}}) == 2

    await eventually(both_handled)
    level = await stock_api.level(loc, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (1, 0, 1)


async def test_a_rejected_checkout_releases_and_refuses_its_late_reservation(stock_api, publish):
    """orders.order.rejected arrives before the checkout's own reserve (which timed out at orders and lands
    late): the release is sticky, the late reserve is refused and holds nothing."""
    loc = (await stock_api.location(id=f"loc_rj_{uuid.uuid4().hex[:6]}", name="rj", lat=31.2, lng=121.4))["id"]
    await stock_api.stock_up(loc, SKU, 2)
    order = f"ord_{uuid.uuid4().hex[:10]}"
    rejected = {**cancelled(order), "type": "orders.order.rejected",
                "data": {"order_id": order, "member_id": None, "channel": "app",
                         "fulfilment": {"type": "pickup", "location_id": loc}, "reason": "upstream-timeout"}}
    await publish(rejected)
    inbox = stock_api.db["inbox"]
    await eventually(lambda: inbox.count_documents({"_id": rejected["id"]}))
    status, problem = await stock_api.reserve({"order_id": order, "mode": "pickup", "location_id": loc,
                                               "lines": [{"sku_id": SKU, "qty": 1}]})
    assert status == 409 and problem["type"].endswith("reservation-released"), problem
    level = await stock_api.level(loc, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (2, 0, 2)
