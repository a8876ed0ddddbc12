"""Exactly once on redelivery, preferences (consent, quiet hours, transactional always),
the pickup code in the member's locale, and email through a real SMTP conversation."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy

from libs.bus import Envelope
from tests.support import eventually
from tests.integration.notifications.notifications_kit import uid


async def sent_deliveries(notifications, event_id: str, expected: int):
    items = await notifications.deliveries(event_id=event_id)
    return items if len(items) == expected and all(d["status"] == "sent" for d in items) else None


async def test_a_redelivered_event_produces_no_second_message(notifications):
    member_id = uid("mbr")
    await notifications.register_member(member_id, phone="+8613900000001", locale="zh-CN")
    order_id = uid("ord")
    notifications.code_owner.codes[("orders", order_id)] = "551207"
    envelope = Envelope(type="orders.order.ready_for_pickup", source="orders", subject="ord_x",
                        data={"order_id": order_id, "member_id": member_id, "location_id": "loc_sh_jingan"})
    # The same event arrives many times at once (an outbox republishing after a crash, a broker redelivery)...
    await asyncio.gather(*(notifications.publish_envelope(envelope) for _ in range(8)))
    await eventually(lambda: sent_deliveries(notifications, envelope.id, 2))
    # ...and once more after it was handled.
    await notifications.publish_envelope(envelope)
    barrier = await notifications.publish("orders.order.ready_for_pickup", {
        "order_id": uid("ord"), "member_id": member_id, "pickup_code": "000111"})
    await eventually(lambda: sent_deliveries(notifications, barrier.id, 2))

    deliveries = await notifications.deliveries(event_id=envelope.id)
    assert sorted(d["channel"] for d in deliveries) == ["push", "sms"]
    assert all(d["attempt_count"] == 1 for d in deliveries)
    messages = await notifications.outbound(event_id=envelope.id)
    assert sorted(m["channel"] for m in messages) == ["push", "sms"]
    sms = [m for m in messages if m["channel"] == "sms"][0]
    assert sms["address"] == "+8613900000001" and "551207" in sms["body"]


async def test_pickup_ready_carries_the_code_in_the_members_locale(notifications):
    english, chinese = uid("mbr"), uid("mbr")
    await notifications.register_member(english, phone="+447700900123", locale="en-GB")
    await notifications.register_member(chinese, phone="+8613900000002", locale="zh-CN")
    events = {}
    for member_id, code in ((english, "730155"), (chinese, "920344")):
        events[member_id] = await notifications.publish("orders.order.ready_for_pickup", {
            "order_id": uid("ord"), "member_id": member_id, "pickup_code": code, "location_id": "loc_sh_jingan",
            "store_name": "Jing'an Flagship"})
    for envelope in events.values():
        await eventually(lambda: sent_deliveries(notifications, envelope.id, 2))

    [en_sms] = await notifications.outbound(event_id=events[english].id, channel="sms")
    assert en_sms["locale"] == "en" and en_sms["address"] == "+447700900123"
    assert "Pickup code: 730155" in en_sms["body"] and "Jing'an Flagship" in en_sms["body"]
    [zh_sms] = await notifications.outbound(event_id=events[chinese].id, channel="sms")
    assert zh_sms["locale"] == "zh-CN" and "取货码 920344" in zh_sms["body"]
    [en_push] = await notifications.outbound(event_id=events[english].id, channel="push")
    assert en_push["subject"] == "Your order is ready for pickup" and "730155" in en_push["body"]
    assert en_push["address"] == english

    # Contact carried by the event itself (a guest order) works without any directory entry.
    guest = await notifications.publish("orders.order.ready_for_pickup", {
        "order_id": uid("ord"), "pickup_code": "118822", "contact": {"phone": "+8613900000003", "locale": "en"}})
    [guest_delivery] = await eventually(lambda: sent_deliveries(notifications, guest.id, 1))
    assert guest_delivery["channel"] == "sms" and "118822" in guest_delivery["body"]
    assert guest_delivery["body"].startswith("[LOOP]")


async def test_marketing_needs_consent_quiet_hours_defer_it_and_transactional_always_goes(notifications):
    no_consent, consenting = uid("mbr"), uid("mbr")
    await notifications.register_member(no_consent, phone="+8613900000004", marketing_consent=False)
    await notifications.register_member(consenting, phone="+8613900000005", marketing_consent=True)

    # The member without consent also switches every channel and category off.
    status, _, _ = await notifications.send("PUT", "/notifications/me/preferences", {
        "channels": {"sms": False, "push": False, "email": False, "wechat": False},
        "categories": {"service": False, "marketing": False}}, token=notifications.member_token(no_consent))
    assert status == 200
    # The consenting member is in quiet hours right now (a window around the current UTC time).
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(hours=1)).strftime("%H:%M"), "end": (now + timedelta(hours=1)).strftime("%H:%M"),
              "timezone": "UTC"}
    status, prefs, _ = await notifications.send("PUT", "/notifications/me/preferences", {"quiet_hours": window},
                                                token=notifications.member_token(consenting))
    assert status == 200 and prefs["quiet_hours"] == window and prefs["categories"]["transactional"] is True

    dormant_a = await notifications.publish("membership.member.dormant", {"member_id": no_consent})
    dormant_b = await notifications.publish("membership.member.dormant", {"member_id": consenting})
    cancelled_a = await notifications.publish("orders.order.cancelled", {"order_id": uid("ord"),
                                                                         "member_id": no_consent})
    cancelled_b = await notifications.publish("orders.order.cancelled", {"order_id": uid("ord"),
                                                                         "member_id": consenting})
    # Transactional reaches both: the opted-out member on the first route we can address (the app push).
    [to_a] = await eventually(lambda: sent_deliveries(notifications, cancelled_a.id, 1))
    assert to_a["channel"] == "push" and to_a["category"] == "transactional"
    await eventually(lambda: sent_deliveries(notifications, cancelled_b.id, 2))
    for envelope in (dormant_a, dormant_b):
        await notifications.wait_handled(envelope.id)

    # No consent: recorded as suppressed, never attempted, nothing sent.
    [suppressed] = await notifications.deliveries(event_id=dormant_a.id)
    assert suppressed["status"] == "suppressed" and suppressed["reason"] == "no-marketing-consent"
    assert suppressed["attempts"] == [] and await notifications.outbound(event_id=dormant_a.id) == []
    # Quiet hours: pending until the window ends, not attempted, nothing sent (checked after the
    # transactional messages created later were already sent).
    [deferred] = await notifications.deliveries(event_id=dormant_b.id)
    assert deferred["status"] == "pending" and deferred["reason"] == "quiet-hours"
    assert deferred["attempt_count"] == 0 and await notifications.outbound(event_id=dormant_b.id) == []
    next_attempt = datetime.fromisoformat(deferred["next_attempt_at"])
    assert now + timedelta(minutes=55) <= next_attempt <= now + timedelta(hours=1, minutes=1)

    # The member sees their own log only; another member's delivery is a 404.
    own_token = notifications.member_token(consenting)
    status, own = await notifications.get("/notifications/deliveries", token=own_token)
    assert status == 200 and own["items"] and {d["recipient"] for d in own["items"]} == {consenting}
    status, _ = await notifications.get(f"/notifications/deliveries/{suppressed['id']}", token=own_token)
    assert status == 404
    status, mine = await notifications.get(f"/notifications/deliveries/{deferred['id']}", token=own_token)
    assert status == 200 and mine["id"] == deferred["id"]


async def test_daily_cap_stops_service_messages_but_not_transactional(notifications):
    member_id = uid("mbr")
    status, _, _ = await notifications.send("PUT", "/notifications/me/preferences", {"daily_cap": 3},
                                            token=notifications.member_token(member_id))
    assert status == 200
    # The welcome message of the registration counts against the cap too.
    await notifications.register_member(member_id, phone="+8613900000006")
    coupons = await asyncio.gather(*(notifications.publish("membership.coupon.issued", {
        "member_id": member_id, "coupon_name": f"c{i}"}) for i in range(4)))
    for envelope in coupons:
        await notifications.wait_handled(envelope.id)
    service = [d for d in await notifications.deliveries(recipient=member_id) if d["category"] == "service"]
    assert len(service) == 5  # one push each: the welcome and four coupons
    capped = [d for d in service if (d["status"], d["reason"]) == ("suppressed", "daily-cap")]
    assert len(capped) == 2 and {d["type"] for d in capped} == {"membership.coupon.issued"}
    refund = await notifications.publish("orders.order.refunded", {"order_id": uid("ord"), "member_id": member_id,
                                                                   "refund_amount": 9900})
    [refund_push] = await eventually(lambda: sent_deliveries(notifications, refund.id, 1))
    assert "¥99.00" in refund_push["body"]


async def test_email_goes_through_a_real_smtp_conversation(start_notifications, smtp_server):
    port, mailbox = smtp_server
    notifications = await start_notifications(smtp_port=port, email_transport="smtp")
    member_id = uid("mbr")
    await notifications.register_member(member_id, email="lin@example.com", locale="en")
    order_id = uid("ord")
    envelope = await notifications.publish("orders.order.confirmed", {
        "order_id": order_id, "member_id": member_id, "totals": {"subtotal": 19800, "discount": 2000,
                                                                 "points_discount": 0, "total": 17800}})
    deliveries = await eventually(lambda: sent_deliveries(notifications, envelope.id, 2))
    email = [d for d in deliveries if d["channel"] == "email"][0]
    assert email["address"] == "lin@example.com" and email["attempts"][0]["status_code"] == 250

    [message] = [m for m in mailbox.messages if m["to"] == ["lin@example.com"]]
    assert "no-reply@o2o.example" in message["from"]
    parsed = message_from_bytes(message["raw"], policy=default_policy)
    assert parsed["Subject"] == "Order confirmed" and parsed["X-O2O-Delivery-Id"] == email["id"]
    text = parsed.get_content()
    assert order_id in text and "¥178.00" in text

    # A mailbox the server refuses (550) fails for good after one attempt; nothing is retried.
    refused_member = uid("mbr")
    await notifications.register_member(refused_member, email="nobody@example.com")
    refused = await notifications.publish("orders.order.confirmed", {"order_id": uid("ord"),
                                                                     "member_id": refused_member})

    async def refused_failed():
        items = await notifications.deliveries(event_id=refused.id, channel="email")
        return items[0] if items and items[0]["status"] == "failed" else None

    failed = await eventually(refused_failed)
    assert failed["attempt_count"] == 1 and failed["reason"] == "permanent-error" and "550" in failed["last_error"]


async def test_email_to_an_smtp_server_that_is_down_is_retried_then_failed(start_notifications):
    from tests.support import free_port
    notifications = await start_notifications(smtp_port=free_port(), max_attempts=3, email_transport="smtp")
    member_id = uid("mbr")
    await notifications.register_member(member_id, email="chen@example.com")
    envelope = await notifications.publish("orders.order.refunded", {"order_id": uid("ord"), "member_id": member_id})

    async def failed():
        items = await notifications.deliveries(event_id=envelope.id, channel="email")
        return items[0] if items and items[0]["status"] == "failed" else None

    delivery = await eventually(failed)
    assert [a["outcome"] for a in delivery["attempts"]] == ["transient_error"] * 3
    assert delivery["reason"] == "retries-exhausted"


async def test_many_events_at_once_with_duplicates_each_reach_their_member_exactly_once(notifications):
    members = [uid("mbr") for _ in range(10)]
    await asyncio.gather(*(notifications.register_member(m, phone=f"+86139100000{i:02d}") for i, m in
                           enumerate(members)))
    envelopes = [Envelope(type="orders.order.shipped", source="orders", subject=uid("ord"),
                          data={"order_id": uid("ord"), "member_id": members[i % len(members)], "carrier": "SF",
                                "tracking_number": f"SF{i:04d}"}) for i in range(40)]
    # Every event is published twice, all at once, in shuffled order.
    copies = [e for e in envelopes for _ in range(2)]
    copies = copies[::2] + copies[1::2][::-1]
    await asyncio.gather(*(notifications.publish_envelope(e) for e in copies))
    for envelope in envelopes:
        await eventually(lambda: sent_deliveries(notifications, envelope.id, 2), timeout=60)
    for envelope in envelopes:
        messages = await notifications.outbound(event_id=envelope.id)
        assert sorted(m["channel"] for m in messages) == ["push", "sms"]
        assert all(envelope.data["tracking_number"] in m["body"] for m in messages)


async def test_the_fanout_given_an_event_it_already_planned_creates_no_delivery_twice(notifications):
    # Past the inbox (a campaign step replayed, an inbox record lost with a restored backup): the fan-out
    # itself finds the deliveries of this event by their key and adds none.
    from services.notifications.usecases import FANOUT

    member_id = uid("mbr")
    await notifications.register_member(member_id, phone="+8613900000031", locale="en")
    envelope = Envelope(type="orders.order.confirmed", source="orders", subject="ord_x",
                        data={"order_id": uid("ord"), "member_id": member_id, "total": 12900})
    fanout = notifications.app[FANOUT]
    first = await fanout.handle_event(envelope)
    again = await fanout.handle_event(envelope)
    assert first >= 1 and again == 0
    deliveries = await notifications.deliveries(event_id=envelope.id)
    assert len(deliveries) == first
    assert len({d["channel"] for d in deliveries}) == len(deliveries)
