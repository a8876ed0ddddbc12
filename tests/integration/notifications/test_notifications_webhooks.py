"""Webhooks to a real local HTTP receiver, signed, retried with backoff, logged per attempt."""
from __future__ import annotations

import asyncio
import json

from tests.support import eventually
from services.notifications.domain.signing import verify
from tests.integration.notifications.notifications_kit import uid


async def subscribe(notifications, url: str, event_types: list[str], secret: str | None = None) -> dict:
    body = {"url": url, "event_types": event_types, "description": "analytics team"}
    if secret:
        body["secret"] = secret
    status, created, content_type = await notifications.send("POST", "/notifications/webhooks", body,
                                                             headers={"Idempotency-Key": uid("key")})
    assert status == 201, created
    return created


async def test_receiver_failing_twice_gets_the_event_once_after_retries_and_the_log_shows_three_attempts(
        notifications, webhook_receiver):
    hook = await subscribe(notifications, webhook_receiver.url, ["orders.order.placed"])
    webhook_receiver.script = [500, 500, 200]
    order_id = uid("ord")
    envelope = await notifications.publish("orders.order.placed", {"order_id": order_id, "member_id": uid("mbr")})

    async def sent():
        items = await notifications.deliveries(recipient=hook["id"], event_id=envelope.id)
        return items if items and items[0]["status"] == "sent" else None

    [delivery] = await eventually(sent)
    assert [a["outcome"] for a in delivery["attempts"]] == ["transient_error", "transient_error", "sent"]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert delivery["attempt_count"] == 3 and delivery["channel"] == "webhook"

    # The receiver saw exactly three requests for this event, each a correctly signed copy of the envelope.
    requests = [r for r in webhook_receiver.requests if r["headers"].get("X-O2O-Event-Id") == envelope.id]
    assert len(requests) == 3
    for number, request in enumerate(requests, start=1):
        assert verify(hook["secret"], request["headers"]["X-O2O-Signature"], request["body"])
        assert not verify("some-other-secret-value", request["headers"]["X-O2O-Signature"], request["body"])
        sent_envelope = json.loads(request["body"])
        assert sent_envelope["id"] == envelope.id and sent_envelope["data"]["order_id"] == order_id
        assert request["headers"]["X-O2O-Attempt"] == str(number)
        assert request["headers"]["X-O2O-Delivery-Id"] == delivery["id"]
    # Exactly one of them was accepted: the event reached the receiver once.
    assert [r["status"] for r in requests] == [500, 500, 200]

    # Barrier instead of a timer: a later event is delivered, and the first one got no further request.
    later = await notifications.publish("orders.order.placed", {"order_id": uid("ord")})
    await eventually(lambda: any(r["headers"].get("X-O2O-Event-Id") == later.id for r in webhook_receiver.requests))
    assert len([r for r in webhook_receiver.requests if r["headers"].get("X-O2O-Event-Id") == envelope.id]) == 3


async def test_only_subscribed_event_types_are_sent_and_otp_is_never_offered(notifications, webhook_receiver):
    await subscribe(notifications, webhook_receiver.url, ["orders.order.shipped"])
    status, problem, content_type = await notifications.send(
        "POST", "/notifications/webhooks", {"url": webhook_receiver.url, "event_types": ["membership.otp.requested"]})
    assert status == 422 and content_type == "application/problem+json"
    ignored = await notifications.publish("orders.order.placed", {"order_id": uid("ord")})
    wanted = await notifications.publish("orders.order.shipped", {"order_id": uid("ord"), "carrier": "SF"})
    await eventually(lambda: any(r["headers"].get("X-O2O-Event-Id") == wanted.id for r in webhook_receiver.requests))
    await notifications.wait_handled(ignored.id)
    assert not [r for r in webhook_receiver.requests if r["headers"].get("X-O2O-Event-Id") == ignored.id]


async def test_permanent_rejection_and_exhausted_retries_fail_and_emit_delivery_failed(
        notifications, webhook_receiver, failure_events):
    hook = await subscribe(notifications, webhook_receiver.url, ["orders.order.cancelled", "orders.order.refunded"])
    webhook_receiver.script = [410] + [503] * 10
    gone = await notifications.publish("orders.order.cancelled", {"order_id": uid("ord")})
    gone_delivery = await eventually(lambda: _failed(notifications, hook["id"], gone.id))
    assert gone_delivery["attempt_count"] == 1 and gone_delivery["reason"] == "permanent-error"

    exhausted = await notifications.publish("orders.order.refunded", {"order_id": uid("ord")})
    exhausted_delivery = await eventually(lambda: _failed(notifications, hook["id"], exhausted.id))
    assert exhausted_delivery["attempt_count"] == notifications.settings.max_attempts
    assert exhausted_delivery["reason"] == "retries-exhausted"
    assert [a["outcome"] for a in exhausted_delivery["attempts"]] == ["transient_error"] * 4

    events = await eventually(lambda: [e for e in failure_events
                                       if e["data"]["event_id"] in (gone.id, exhausted.id)] if len(
        [e for e in failure_events if e["data"]["event_id"] in (gone.id, exhausted.id)]) == 2 else None)
    by_event = {e["data"]["event_id"]: e for e in events}
    assert by_event[gone.id]["type"] == "notifications.delivery.failed"
    assert by_event[gone.id]["source"] == "notifications"
    assert by_event[gone.id]["data"]["channel"] == "webhook" and by_event[gone.id]["data"]["attempts"] == 1
    assert by_event[exhausted.id]["data"]["attempts"] == 4
    assert by_event[exhausted.id]["data"]["delivery_id"] == exhausted_delivery["id"]


async def _failed(notifications, recipient: str, event_id: str):
    items = await notifications.deliveries(recipient=recipient, event_id=event_id)
    return items[0] if items and items[0]["status"] == "failed" else None


async def test_removed_subscription_gets_nothing_more(notifications, webhook_receiver):
    hook = await subscribe(notifications, webhook_receiver.url, ["orders.order.completed"])
    status, _, _ = await notifications.send("DELETE", f"/notifications/webhooks/{hook['id']}")
    assert status == 204
    envelope = await notifications.publish("orders.order.completed", {"order_id": uid("ord")})
    await notifications.wait_handled(envelope.id)
    assert await notifications.deliveries(recipient=hook["id"]) == []
    status, listed = await notifications.get("/notifications/webhooks")
    assert [h for h in listed["items"] if h["id"] == hook["id"]][0]["active"] is False
    assert all("secret" not in h for h in listed["items"])


async def test_webhook_creation_is_idempotent_and_validated(notifications, webhook_receiver):
    body = {"url": webhook_receiver.url, "event_types": ["stock.level_low"], "secret": "a-secret-of-16-chars"}
    key = {"Idempotency-Key": uid("key")}
    first = await notifications.send("POST", "/notifications/webhooks", body, headers=key)
    again = await notifications.send("POST", "/notifications/webhooks", body, headers=key)
    assert first[0] == again[0] == 201 and first[1]["id"] == again[1]["id"]
    other = await notifications.send("POST", "/notifications/webhooks", {**body, "description": "x"}, headers=key)
    assert other[0] == 422
    for bad in ({"url": "ftp://x", "event_types": ["stock.level_low"]},
                {"url": webhook_receiver.url, "event_types": []},
                {"url": webhook_receiver.url, "event_types": ["made.up.event"]},
                {"url": webhook_receiver.url, "event_types": ["stock.level_low"], "secret": "short"}):
        status, problem, content_type = await notifications.send("POST", "/notifications/webhooks", bad)
        assert status == 422 and content_type == "application/problem+json", (bad, problem)
    member = notifications.member_token(uid("mbr"))
    status, problem, _ = await notifications.send("POST", "/notifications/webhooks", body, token=member)
    assert status == 403


async def test_an_admin_retries_a_failed_delivery_once_the_receiver_is_fixed(notifications, webhook_receiver):
    hook = await subscribe(notifications, webhook_receiver.url, ["orders.return.requested"])
    webhook_receiver.script = [404]  # the receiver's route was missing
    envelope = await notifications.publish("orders.return.requested", {"order_id": uid("ord")})
    failed = await eventually(lambda: _failed(notifications, hook["id"], envelope.id))
    status, retried, _ = await notifications.send("POST", f"/notifications/deliveries/{failed['id']}/retry")
    assert status == 202 and retried["status"] == "pending"

    async def sent():
        items = await notifications.deliveries(recipient=hook["id"], event_id=envelope.id)
        return items[0] if items and items[0]["status"] == "sent" else None

    delivery = await eventually(sent)
    assert [(a["number"], a["status_code"]) for a in delivery["attempts"]] == [(1, 404), (2, 200)]
    status, problem, content_type = await notifications.send("POST", f"/notifications/deliveries/{failed['id']}/retry")
    assert status == 409 and content_type == "application/problem+json"
    status, _, _ = await notifications.send("POST", f"/notifications/deliveries/{uid('dlv')}/retry")
    assert status == 404
    status, _, _ = await notifications.send("POST", f"/notifications/deliveries/{failed['id']}/retry",
                                            token=notifications.member_token(uid("mbr")))
    assert status == 403


async def test_concurrent_creations_with_one_idempotency_key_create_one_subscription(notifications, webhook_receiver):
    body = {"url": webhook_receiver.url, "event_types": ["orders.order.picked_up"], "description": uid("team")}
    key = {"Idempotency-Key": uid("key")}
    answers = await asyncio.gather(*(notifications.send("POST", "/notifications/webhooks", body, headers=key)
                                     for _ in range(10)))
    statuses = [a[0] for a in answers]
    assert set(statuses) <= {201, 409} and 201 in statuses
    assert len({a[1]["id"] for a in answers if a[0] == 201}) == 1
    status, listed = await notifications.get("/notifications/webhooks")
    assert len([h for h in listed["items"] if h["description"] == body["description"]]) == 1


async def test_outside_dev_mode_webhooks_to_internal_addresses_are_refused(start_notifications):
    production = await start_notifications(dev_mode=False)
    status, problem, content_type = await production.send("POST", "/notifications/webhooks", {
        "url": "http://127.0.0.1:8084/members/internal/members", "event_types": ["orders.order.placed"]})
    assert status == 422 and problem["type"].endswith("webhook-target-not-allowed")
    status, listed = await production.get("/notifications/webhooks")
    assert listed["items"] == []
