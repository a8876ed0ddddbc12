"""The rest of the service through its real interfaces: operations messages, OTP, templates edited through the
API, the recipient directory following merges, the delivery log's paging and visibility, and bad input."""
from __future__ import annotations

import asyncio

from tests.support import eventually
from tests.integration.notifications.notifications_kit import mint_token, uid


async def sent(notifications, event_id: str, expected: int):
    items = await notifications.deliveries(event_id=event_id)
    return items if len(items) == expected and all(d["status"] == "sent" for d in items) else None


async def test_low_stock_reaches_the_stores_managers_and_only_they_see_it(notifications):
    location = uid("loc")
    envelope = await notifications.publish("stock.level_low", {
        "location_id": location, "sku_id": "sku_tee_classic_whi_s", "available": 1, "on_hand": 3,
        "reorder_point": 3}, source="stock")
    [push] = await eventually(lambda: sent(notifications, envelope.id, 1))
    assert push["recipient"] == f"store:{location}" and push["address"] == f"topic:store:{location}"
    assert push["category"] == "operations" and "sku_tee_classic_whi_s" in push["body"] and "1" in push["body"]

    manager = mint_token("stf_m", ["store_manager"], staff_id="stf_m", store_ids=[location])
    other = mint_token("stf_o", ["store_manager"], staff_id="stf_o", store_ids=[uid("loc")])
    status, mine = await notifications.get("/notifications/deliveries", token=manager)
    assert status == 200 and [d["id"] for d in mine["items"]] == [push["id"]]
    status, theirs = await notifications.get("/notifications/deliveries", token=other)
    assert status == 200 and theirs["items"] == []
    status, _ = await notifications.get(f"/notifications/deliveries/{push['id']}", token=other)
    assert status == 404


async def test_statement_closed_goes_to_the_franchisee_by_email_when_known(start_notifications, smtp_server):
    port, mailbox = smtp_server
    notifications = await start_notifications(smtp_port=port, email_transport="smtp")
    franchisee = uid("frn")
    status, contact, _ = await notifications.send("PUT", f"/notifications/recipients/franchisee:{franchisee}",
                                                  {"email": "owner@franchise.example", "locale": "en"})
    assert status == 200 and contact["email"] == "owner@franchise.example"
    statement = {"statement_id": uid("stm"), "account": f"franchisee:{franchisee}", "party_kind": "franchisee",
                 "party_id": franchisee, "franchisee_id": franchisee, "store_id": None, "granularity": "month",
                 "period_start": "2026-10-01T00:00:00Z", "period_end": "2026-11-01T00:00:00Z", "net_amount": 1234500}
    envelope = await notifications.publish("settlement.statement.closed", statement, source="settlement")
    deliveries = await eventually(lambda: sent(notifications, envelope.id, 2))
    assert sorted(d["channel"] for d in deliveries) == ["email", "push"]
    email = [d for d in deliveries if d["channel"] == "email"][0]
    assert email["subject"] == "Statement closed" and "¥12345.00" in email["body"] and "2026-10-01" in email["body"]
    assert any(m["to"] == ["owner@franchise.example"] for m in mailbox.messages)
    # HQ's own statement closes too, and nobody is messaged about it.
    hq = await notifications.publish("settlement.statement.closed", {**statement, "statement_id": uid("stm"),
                                                                     "party_kind": "hq", "franchisee_id": None})
    await notifications.wait_handled(hq.id)
    assert await notifications.deliveries(event_id=hq.id) == []


async def test_otp_is_a_transactional_sms_in_the_requested_locale(notifications):
    phone = "+8613600000001"
    envelope = await notifications.publish("membership.otp.requested", {
        "phone": phone, "code": "402913", "locale": "en", "expires_in": 300}, source="membership")
    [sms] = await eventually(lambda: sent(notifications, envelope.id, 1))
    assert sms["channel"] == "sms" and sms["recipient"] == f"phone:{phone}" and sms["category"] == "transactional"
    assert "402913" not in sms["body"]  # the delivery log never shows a one-time password
    [message] = await notifications.outbound(event_id=envelope.id)
    assert message["address"] == phone and "402913" in message["body"] and "5 minutes" in message["body"]


async def test_an_edited_template_is_used_and_unsafe_templates_are_refused(notifications):
    path = "/notifications/templates/orders.order.shipped/push/en"
    status, before = await notifications.get(path)
    assert status == 200 and before["is_default"] is True
    status, saved, _ = await notifications.send("PUT", path, {
        "subject": "On its way", "body": "{{ carrier }} has order {{ order_id }} ({{ tracking_number }})"})
    assert status == 200 and saved["version"] == before["version"] + 1 and saved["updated_by"] == "stf_hq"

    member_id = uid("mbr")
    await notifications.register_member(member_id, locale="en")
    envelope = await notifications.publish("orders.order.shipped", {
        "order_id": "ord_42", "member_id": member_id, "carrier": "SF Express", "tracking_number": "SF123"})
    [push] = await eventually(lambda: sent(notifications, envelope.id, 1))
    assert push["subject"] == "On its way" and push["body"] == "SF Express has order ord_42 (SF123)"

    for bad in ({"body": "{% if %}"}, {"body": "{{ ''.__class__.__mro__[1].__subclasses__() }}"},
                {"body": ""}, {"subject": "x"}, {"body": "x" * 5000}, {"body": "ok", "extra": 1}):
        status, problem, content_type = await notifications.send("PUT", path, bad)
        assert status == 422 and content_type == "application/problem+json", (bad, problem)
    status, after = await notifications.get(path)
    assert after["body"] == saved["body"]  # nothing of the refused edits was stored
    for unknown in ("/notifications/templates/made.up/push/en", "/notifications/templates/orders.order.shipped/fax/en",
                    "/notifications/templates/orders.order.shipped/push/fr"):
        status, problem, _ = await notifications.send("PUT", unknown, {"body": "x"})
        assert status == 404, unknown
    status, _, _ = await notifications.send("PUT", path, {"body": "x"}, token=notifications.member_token(member_id))
    assert status == 403
    status, preview, _ = await notifications.send("POST", "/notifications/templates/preview", {
        "subject": "Hi", "body": "{{ pickup_code }} / {{ total | yuan }}", "data": {"pickup_code": "1", "total": 250}})
    assert status == 200 and preview["body"] == "1 / ¥2.50"
    status, listed = await notifications.get("/notifications/templates", type="orders.order.ready_for_pickup")
    assert status == 200 and {(t["channel"], t["locale"]) for t in listed["items"]} == {
        ("sms", "zh-CN"), ("sms", "en"), ("push", "zh-CN"), ("push", "en")}


async def test_messages_to_a_merged_member_reach_the_survivor(notifications):
    survivor, absorbed = uid("mbr"), uid("mbr")
    await notifications.register_member(survivor, phone="+8613500000001", locale="en")
    await notifications.register_member(absorbed, phone="+8613500000002", locale="zh-CN")
    merged = await notifications.publish("membership.member.merged", {
        "member_id": survivor, "merged_member_id": absorbed, "points_moved": 10, "coupons_moved": 0,
        "points_balance": 100}, source="membership")
    await notifications.wait_handled(merged.id)
    envelope = await notifications.publish("orders.order.ready_for_pickup", {
        "order_id": uid("ord"), "member_id": absorbed, "pickup_code": "777000"})
    deliveries = await eventually(lambda: sent(notifications, envelope.id, 2))
    assert {d["recipient"] for d in deliveries} == {survivor}
    sms = [d for d in deliveries if d["channel"] == "sms"][0]
    assert sms["address"] == "+8613500000001" and sms["locale"] == "en"


async def test_delivery_log_pages_with_a_cursor_and_filters(notifications):
    member_id = uid("mbr")
    await notifications.register_member(member_id, phone="+8613400000001")
    events = await asyncio.gather(*(notifications.publish("orders.order.shipped", {
        "order_id": uid("ord"), "member_id": member_id, "carrier": "SF", "tracking_number": str(i)})
        for i in range(3)))
    for envelope in events:
        await eventually(lambda: sent(notifications, envelope.id, 2))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"recipient": member_id, "type": "orders.order.shipped", "limit": 4}
        if cursor:
            params["cursor"] = cursor
        status, page = await notifications.get("/notifications/deliveries", **params)
        assert status == 200
        seen += [d["id"] for d in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 2 and len(seen) == len(set(seen)) == 6 and seen == sorted(seen, reverse=True)
    status, sms_only = await notifications.get("/notifications/deliveries", recipient=member_id, channel="sms",
                                               status="sent")
    assert len(sms_only["items"]) == 3 and {d["channel"] for d in sms_only["items"]} == {"sms"}
    for bad in ({"cursor": "!!not-a-cursor"}, {"status": "lost"}, {"limit": "0"}, {"limit": "abc"},
                {"unknown": "1"}):
        status, problem = await notifications.get("/notifications/deliveries", **bad)
        assert status in (400, 422) and problem["type"].startswith("https://o2o.example/problems/"), bad
    async with notifications.http.get(notifications.base + "/notifications/deliveries") as response:
        assert response.status == 401 and response.content_type == "application/problem+json"


async def test_preferences_reject_bad_input_and_change_nothing(notifications):
    member_id = uid("mbr")
    token = notifications.member_token(member_id)
    for bad in ({"categories": {"transactional": False}}, {"channels": {"fax": False}},
                {"quiet_hours": {"start": "25:00", "end": "07:00"}},
                {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Olympus"}},
                {"daily_cap": -1}, {"daily_cap": "many"}, {"colour": "blue"}):
        status, problem, content_type = await notifications.send("PUT", "/notifications/me/preferences", bad,
                                                                 token=token)
        assert status == 422 and content_type == "application/problem+json", (bad, problem)
    async with notifications.http.put(notifications.base + "/notifications/me/preferences", data=b"{not json",
                                      headers=notifications.auth(token)) as response:
        assert response.status == 400
    staff = mint_token("stf_1", ["store_staff"], staff_id="stf_1", store_ids=["loc_sh_jingan"])
    status, _ = await notifications.get("/notifications/me/preferences", token=staff)
    assert status == 403
    status, prefs = await notifications.get("/notifications/me/preferences", token=token)
    assert status == 200 and prefs["daily_cap"] == notifications.settings.default_daily_cap
    assert prefs["quiet_hours"] is None and all(prefs["channels"].values())
    status, same = await notifications.get(f"/notifications/members/{member_id}/preferences")
    assert status == 200 and same == prefs
    status, _ = await notifications.get(f"/notifications/members/{member_id}/preferences", token=token)
    assert status == 403


async def test_concurrent_preference_updates_all_apply(notifications):
    member_id = uid("mbr")
    token = notifications.member_token(member_id)
    channels = ["sms", "push", "email", "wechat"]
    results = await asyncio.gather(*(notifications.send("PATCH", "/notifications/me/preferences",
                                                        {"channels": {c: False}}, token=token) for c in channels))
    assert [r[0] for r in results] == [200] * 4
    status, prefs = await notifications.get("/notifications/me/preferences", token=token)
    # No lost update: each request changed its own channel on top of the others.
    assert prefs["channels"] == {c: False for c in channels}


async def test_sink_mirror_keeps_every_rendered_message(start_notifications):
    notifications = await start_notifications(sink_mirror=True)
    member_id = uid("mbr")
    await notifications.register_member(member_id, phone="+8613300000001")
    envelope = await notifications.publish("orders.order.ready_for_pickup", {
        "order_id": uid("ord"), "member_id": member_id, "pickup_code": "246810"})
    deliveries = await eventually(lambda: sent(notifications, envelope.id, 3))
    assert sorted(d["channel"] for d in deliveries) == ["push", "sink", "sms"]
    [kept] = await notifications.outbound(event_id=envelope.id, channel="sink")
    assert "246810" in kept["body"] and kept["sandbox"] is False

    status, metrics_text = 0, ""
    async with notifications.http.get(notifications.base + "/metrics") as response:
        status, metrics_text = response.status, await response.text()
    assert status == 200
    assert 'o2o_notifications_deliveries_created_total{category="transactional",channel="sink",status="pending"}' \
        in metrics_text
    assert 'o2o_notifications_delivery_attempts_total{channel="sms",outcome="sent"}' in metrics_text


async def test_in_dev_mode_email_is_recorded_by_the_sandbox_instead_of_smtp(notifications):
    assert notifications.settings.dev_mode and notifications.settings.email_transport is None
    member_id = uid("mbr")
    await notifications.register_member(member_id, email="dev@example.com", locale="en")
    envelope = await notifications.publish("orders.order.confirmed", {"order_id": "ord_dev", "member_id": member_id})
    await eventually(lambda: sent(notifications, envelope.id, 2))
    [email] = await notifications.outbound(event_id=envelope.id, channel="email")
    assert email["address"] == "dev@example.com" and email["subject"] == "Order confirmed"


async def test_demo_contacts_are_loaded_once_and_reach_the_demo_members(start_notifications):
    prefix = f"o2o_n{uid('demo')[5:]}_"
    await start_notifications(demo_data=True, mongo_db_prefix=prefix)
    notifications = await start_notifications(demo_data=True, mongo_db_prefix=prefix)  # a restart loads again
    envelope = await notifications.publish("orders.order.ready_for_pickup", {
        "order_id": uid("ord"), "member_id": "mbr_demo_chen", "pickup_code": "135790"})
    deliveries = await eventually(lambda: sent(notifications, envelope.id, 2))
    sms = [d for d in deliveries if d["channel"] == "sms"][0]
    assert sms["address"] == "+8613800000002" and sms["locale"] == "en"
    status, contact, _ = await notifications.send("PUT", "/notifications/recipients/franchisee:frn_dongfang",
                                                  {"phone": "+8613811111111"})
    assert status == 200 and contact["name"] == "Dongfang Retail Co." and contact["phone"] == "+8613811111111"
    # Member contacts come from membership: another recipient is unknown here, whatever the body says.
    for recipient, body in (("mbr_demo_chen", {"phone": "+8613822222222"}), ("store", {"phone": "not a phone"})):
        status, problem, _ = await notifications.send("PUT", f"/notifications/recipients/{recipient}", body)
        assert status == 404 and problem["type"].endswith("/unknown-recipient"), (recipient, problem)
