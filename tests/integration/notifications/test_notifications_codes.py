"""One-time codes in messages: fetched from their owner (with notifications' service token) when the message is
sent, and outside dev mode never kept in the delivery log or HQ's outbound log.

The attack this closes: pickup codes and OTP texts were readable by anyone with HQ's log views (and rode the
shared bus to every consumer).
"""
from __future__ import annotations

from tests.integration.notifications.notifications_kit import uid
from tests.support import eventually

MASK = "••••••"


async def sent(notifications, event_id: str, expected: int):
    items = await notifications.deliveries(event_id=event_id)
    return items if len(items) == expected and all(d["status"] == "sent" for d in items) else None


async def test_outside_dev_mode_the_logs_never_show_a_pickup_code_or_a_login_code(start_notifications, code_owner):
    notifications = await start_notifications(dev_mode=False)
    member_id = uid("mbr")
    await notifications.register_member(member_id, phone="+8613900000021", locale="en")
    ready = await notifications.publish("orders.order.ready_for_pickup", {
        "order_id": uid("ord"), "member_id": member_id, "pickup_code": "731904"})
    otp = await notifications.publish("membership.otp.requested", {
        "phone": "+8613900000022", "code": "604182", "locale": "en", "expires_in": 300})
    deliveries = await eventually(lambda: sent(notifications, ready.id, 2))
    deliveries += await eventually(lambda: sent(notifications, otp.id, 1))
    messages = await notifications.outbound(event_id=ready.id) + await notifications.outbound(event_id=otp.id)
    assert len(messages) == 3
    for record in [*deliveries, *messages]:
        assert "731904" not in str(record) and "604182" not in str(record), record
    sms = next(m for m in messages if m["event_id"] == ready.id and m["channel"] == "sms")
    assert MASK in sms["body"]

    # Each code was fetched from its owner, with a token for that owner only.
    assert {"path": "/auth/service/token", "client_id": "notifications", "audience": "orders"} in code_owner.calls
    assert {"path": "/auth/service/token", "client_id": "notifications", "audience": "membership"} in code_owner.calls
    fetches = [c for c in code_owner.calls if "/internal/" in c["path"]]
    assert {(c["path"].split("/")[1], c["authorization"]) for c in fetches} == {
        ("orders", "Bearer svc-token-orders"), ("members", "Bearer svc-token-membership")}


async def test_in_dev_mode_the_sent_text_is_shown_and_never_a_code_the_event_carried(notifications):
    member_id, order_id = uid("mbr"), uid("ord")
    await notifications.register_member(member_id, phone="+8613900000023", locale="en")
    notifications.code_owner.codes[("orders", order_id)] = "118034"
    # An older producer still puts a code in the event: it is neither used nor kept.
    envelope = await notifications.publish_raw_event("orders.order.ready_for_pickup", {
        "order_id": order_id, "member_id": member_id, "pickup_code": "999999"})
    deliveries = await eventually(lambda: sent(notifications, envelope.id, 2))
    messages = await notifications.outbound(event_id=envelope.id)
    for record in [*deliveries, *messages]:
        assert "118034" in record["body"] and "999999" not in str(record), record


async def test_a_code_its_owner_no_longer_has_fails_the_message_for_good(notifications):
    member_id = uid("mbr")
    await notifications.register_member(member_id, phone="+8613900000024", locale="en")
    envelope = await notifications.publish("orders.order.ready_for_pickup", {"order_id": uid("ord"),
                                                                             "member_id": member_id})

    async def failed():
        items = await notifications.deliveries(event_id=envelope.id)
        return items if len(items) == 2 and all(d["status"] == "failed" for d in items) else None
    for delivery in await eventually(failed):
        assert delivery["attempt_count"] == 1 and "no code to send" in delivery["last_error"]
