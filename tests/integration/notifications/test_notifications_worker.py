"""The delivery worker under competition and crashes: competing workers send each delivery once; a delivery
claimed by a worker that died is sent again after its lease, and the dead worker's late answer changes nothing."""
from __future__ import annotations

import asyncio

from tests.support import eventually
from services.notifications.usecases import DELIVERY_WORKER
from tests.integration.notifications.notifications_kit import uid

NEVER = 3600.0  # the periodic worker stays idle: the test plays the workers itself


async def created(notifications, event_id: str, expected: int):
    items = await notifications.deliveries(event_id=event_id)
    return items if len(items) == expected else None


async def test_competing_workers_send_each_delivery_exactly_once(start_notifications):
    notifications = await start_notifications(delivery_poll_interval_s=NEVER)
    member_id = uid("mbr")
    await notifications.register_member(member_id, phone="+8613200000001")
    events = await asyncio.gather(*(notifications.publish("orders.order.shipped", {
        "order_id": uid("ord"), "member_id": member_id, "carrier": "SF", "tracking_number": str(i)})
        for i in range(15)))
    for envelope in events:
        await eventually(lambda: created(notifications, envelope.id, 2))

    # Four workers race over the same 31 due deliveries (30 + the welcome push).
    tried = await asyncio.gather(*(notifications.app[DELIVERY_WORKER].deliver_due() for _ in range(4)))
    assert sum(tried) == 31
    for envelope in events:
        deliveries = await notifications.deliveries(event_id=envelope.id)
        assert {(d["status"], d["attempt_count"]) for d in deliveries} == {("sent", 1)}
        assert len(await notifications.outbound(event_id=envelope.id)) == 2


async def test_a_delivery_claimed_by_a_crashed_worker_is_sent_after_its_lease(start_notifications, webhook_receiver):
    notifications = await start_notifications(delivery_poll_interval_s=NEVER, delivery_lease_s=0.5)
    status, hook, _ = await notifications.send("POST", "/notifications/webhooks", {
        "url": webhook_receiver.url, "event_types": ["orders.order.completed"]})
    assert status == 201
    envelope = await notifications.publish("orders.order.completed", {"order_id": uid("ord")})
    [pending] = await eventually(lambda: created(notifications, envelope.id, 1))

    # Worker A claims the delivery and dies before sending.
    [stale] = await notifications.app[DELIVERY_WORKER].claim([pending["id"]])
    # While A's lease holds, nobody else takes it.
    assert await notifications.app[DELIVERY_WORKER].claim([pending["id"]]) == []
    # After the lease, worker B takes over and sends it.
    [taken] = await eventually(lambda: notifications.app[DELIVERY_WORKER].claim([pending["id"]]))
    assert await notifications.app[DELIVERY_WORKER].send_claimed(taken) == "sent"
    # A wakes up and reports a failure for its stale claim: recorded in the log, the outcome is B's.
    webhook_receiver.script = [500]
    await notifications.app[DELIVERY_WORKER].send_claimed(stale)

    [delivery] = await notifications.deliveries(event_id=envelope.id)
    assert delivery["status"] == "sent" and delivery["attempt_count"] == 2
    assert sorted((a["number"], a["outcome"]) for a in delivery["attempts"]) == [(1, "transient_error"), (2, "sent")]
    accepted = [r for r in webhook_receiver.requests if r["headers"]["X-O2O-Event-Id"] == envelope.id
                and r["status"] == 200]
    assert len(accepted) == 1


async def test_the_worker_polls_only_deliveries_still_to_send(start_notifications):
    """The worker's poll reads a one-field index that holds only deliveries waiting to be sent (nx-27017
    ignores compound indexes: the old status + due query read every delivery ever made on each poll)."""
    from libs.service import MONGO
    notifications = await start_notifications(delivery_poll_interval_s=NEVER)
    member_id = uid("mbr")
    await notifications.register_member(member_id, phone="+8613200000002")
    envelope = await notifications.publish("orders.order.shipped", {
        "order_id": uid("ord"), "member_id": member_id, "carrier": "SF", "tracking_number": "1"})
    await eventually(lambda: created(notifications, envelope.id, 2))
    collection = notifications.app[MONGO].db["deliveries"]
    waiting = await collection.find({"event_id": envelope.id}).to_list()
    assert all(d["poll_ms"] == d["due_at_ms"] for d in waiting)
    assert await notifications.app[DELIVERY_WORKER].deliver_due() >= 2
    done = await collection.find({"event_id": envelope.id}).to_list()
    assert {d["status"] for d in done} == {"sent"} and all("poll_ms" not in d for d in done)
    assert await notifications.app[DELIVERY_WORKER].deliver_due() == 0
