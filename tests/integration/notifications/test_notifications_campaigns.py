"""Campaign send: members with a tag from membership's internal endpoint (a real HTTP server standing in for
membership, with the service token handshake), throttled, with the same preferences and caps."""
from __future__ import annotations

from datetime import datetime

import pytest
from aiohttp import web

from tests.support import eventually, free_port, running_app
from tests.integration.notifications.notifications_kit import uid


@pytest.fixture
async def membership_stub():
    """Serves /auth/service/token and a two-page /members/internal/members?tag=..., and records the calls."""
    calls: list[dict] = []
    tag = uid("tag")
    members = [
        {"id": uid("mbr"), "phone": "+8613700000001", "email": None, "locale": "en", "marketing_consent": True},
        {"id": uid("mbr"), "phone": "+8613700000002", "email": None, "locale": "zh-CN", "marketing_consent": False},
        {"id": uid("mbr"), "phone": "+8613700000003", "email": None, "locale": "zh-CN", "marketing_consent": True},
        {"id": uid("mbr"), "phone": None, "email": None, "locale": "zh-CN", "marketing_consent": True},
        {"id": uid("mbr"), "phone": "+8613700000005", "email": None, "locale": "en", "marketing_consent": True},
    ]

    async def token(request: web.Request) -> web.Response:
        body = await request.json()
        calls.append({"path": request.path, "client_id": body.get("client_id")})
        return web.json_response({"access_token": "svc-token", "token_type": "Bearer", "expires_in": 300})

    async def list_members(request: web.Request) -> web.Response:
        calls.append({"path": request.path, "query": dict(request.query),
                      "authorization": request.headers.get("Authorization")})
        if request.query.get("tag") != tag:
            return web.json_response({"items": [], "next_cursor": None})
        if request.query.get("cursor") == "page2":
            return web.json_response({"items": members[3:], "next_cursor": None})
        return web.json_response({"items": members[:3], "next_cursor": "page2"})

    app = web.Application()
    app.router.add_post("/auth/service/token", token)
    app.router.add_get("/members/internal/members", list_members)
    port = free_port()
    async with running_app(app, port) as base:
        yield {"url": base, "tag": tag, "members": members, "calls": calls}


async def test_campaign_reaches_consenting_tagged_members_throttled(start_notifications, membership_stub):
    notifications = await start_notifications(membership_url=membership_stub["url"], campaign_rate_per_s=50.0,
                                              campaign_page_size=3)
    members = membership_stub["members"]
    # The last member switched marketing off in their own preferences.
    status, _, _ = await notifications.send("PUT", "/notifications/me/preferences", {
        "categories": {"marketing": False}}, token=notifications.member_token(members[4]["id"]))
    assert status == 200
    status, template, _ = await notifications.send("PUT", "/notifications/templates/campaign.spring/sms/en", {
        "subject": "Spring", "body": "[LOOP] {{ headline }}, {{ recipient.name or 'friend' }}! Reply STOP to opt out"})
    assert status == 200 and template["is_default"] is False
    status, _, _ = await notifications.send("PUT", "/notifications/templates/campaign.spring/sms/zh-CN", {
        "subject": "春季", "body": "【LOOP】{{ headline }} 回复 TD 退订"})
    assert status == 200

    status, campaign, _ = await notifications.send("POST", "/notifications/campaigns", {
        "name": "Spring drop", "tag": membership_stub["tag"], "template": "campaign.spring", "channels": ["sms"],
        "data": {"headline": "New arrivals"}}, headers={"Idempotency-Key": uid("key")})
    assert status == 202 and campaign["status"] == "queued"

    async def completed():
        code, body = await notifications.get(f"/notifications/campaigns/{campaign['id']}")
        return body if body["status"] == "completed" else None

    done = await eventually(completed)
    assert done["members_seen"] == 5 and done["queued"] == 2 and done["suppressed"] == 3

    async def all_sent():
        items = await notifications.deliveries(event_id=campaign["id"])
        pending = [d for d in items if d["status"] in ("pending", "sending")]
        return items if len(items) == 4 and not pending else None  # the member without a phone gets none

    deliveries = {d["recipient"]: d for d in await eventually(all_sent)}
    assert deliveries[members[0]["id"]]["status"] == "sent"
    assert deliveries[members[0]["id"]]["body"] == "[LOOP] New arrivals, friend! Reply STOP to opt out"
    assert deliveries[members[1]["id"]]["reason"] == "no-marketing-consent"
    assert deliveries[members[2]["id"]]["status"] == "sent" and "【LOOP】New arrivals" in deliveries[members[2]["id"]][
        "body"]
    assert deliveries[members[4]["id"]]["reason"] == "marketing-off"
    assert members[3]["id"] not in deliveries

    # Throttled: each queued message is due at least 1/rate seconds after the previous one.
    scheduled = sorted(datetime.fromisoformat(deliveries[members[i]["id"]]["scheduled_at"]) for i in (0, 2))
    # Paced: consecutive queued messages are at least 1/rate seconds apart.
    assert (scheduled[1] - scheduled[0]).total_seconds() >= 1 / 50

    # Membership was called with a service token, by tag, page by page.
    pages = [c for c in membership_stub["calls"] if c["path"] == "/members/internal/members"]
    assert [c["query"].get("cursor") for c in pages] == [None, "page2"]
    assert all(c["authorization"] == "Bearer svc-token" and c["query"]["tag"] == membership_stub["tag"]
               for c in pages)
    assert {"path": "/auth/service/token", "client_id": "notifications"} in membership_stub["calls"]


async def test_campaign_input_is_validated_and_admin_only(notifications):
    base = {"name": "x", "tag": "vip"}
    for bad in ({**base, "template": "orders.order.shipped"}, {**base, "channels": ["fax"]}, {"tag": "vip"},
                {**base, "template": "campaign.never_written"}, {**base, "channels": []}):
        status, problem, content_type = await notifications.send("POST", "/notifications/campaigns", bad)
        assert status == 422 and content_type == "application/problem+json", (bad, problem)
    status, _, _ = await notifications.send("POST", "/notifications/campaigns", base,
                                            token=notifications.member_token(uid("mbr")))
    assert status == 403
    status, _ = await notifications.get(f"/notifications/campaigns/{uid('ncp')}")
    assert status == 404


async def test_a_paced_message_is_not_sent_once_the_member_switched_marketing_off(start_notifications,
                                                                                  membership_stub):
    # One message every 5 s: the third consenting member's message waits long enough to change their mind.
    notifications = await start_notifications(membership_url=membership_stub["url"], campaign_rate_per_s=0.2,
                                              campaign_page_size=3)
    members = membership_stub["members"]
    status, campaign, _ = await notifications.send("POST", "/notifications/campaigns", {
        "name": "Paced", "tag": membership_stub["tag"], "channels": ["sms"], "data": {"headline": "Hi"}})
    assert status == 202
    late = members[2]["id"]  # the second consenting member: due one slot (5 s) after the first

    async def waiting():
        items = await notifications.deliveries(event_id=campaign["id"], recipient=late)
        return items[0] if items and items[0]["status"] == "pending" else None

    pending = await eventually(waiting)
    assert pending["attempt_count"] == 0
    status, _, _ = await notifications.send("PATCH", "/notifications/me/preferences",
                                            {"categories": {"marketing": False}},
                                            token=notifications.member_token(late))
    assert status == 200

    async def settled():
        items = await notifications.deliveries(event_id=campaign["id"], recipient=late)
        return items[0] if items and items[0]["status"] not in ("pending", "sending") else None

    final = await eventually(settled, timeout=30)
    assert final["status"] == "suppressed" and final["reason"] == "marketing-off" and final["attempts"] == []
    assert await notifications.outbound(event_id=campaign["id"], address=members[2]["phone"]) == []
    [first] = await notifications.deliveries(event_id=campaign["id"], recipient=members[0]["id"])
    assert first["status"] == "sent"
