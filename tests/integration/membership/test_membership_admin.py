"""Staff and HQ endpoints: members, coupon templates, campaigns, QR codes, analytics; campaign audiences."""
from __future__ import annotations

import uuid

from tests.integration.membership.conftest import bearer, publish, unique_phone
from tests.support import eventually


async def test_hq_builds_a_campaign_and_its_qr_code_and_a_scan_uses_them(membership):
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    suffix = uuid.uuid4().hex[:6]
    status, template = await membership.api.post("/members/coupon-templates", {
        "id": f"cpt_jeans_{suffix}", "name": "15% off jeans", "kind": "percent_off", "percent_off": 15,
        "max_off": 5000, "scope": {"type": "categories", "categories": ["jeans"]}, "channel": "in_store",
        "valid_days": 7, "per_member_limit": 1, "total_cap": 1}, headers=bearer(admin))
    assert status == 201 and template["issued_count"] == 0 and template["scope"]["values"] == ["jeans"]
    status, campaign = await membership.api.post("/members/campaigns", {
        "id": f"cmp_jeans_{suffix}", "name": "Jeans week", "tag": f"jeans-week-{suffix}",
        "coupon_template_id": template["id"]}, headers=bearer(admin))
    assert status == 201
    manager = await membership.staff_token("xujiahui.manager", "xujiahui-manager-pass")
    status, qr = await membership.api.post("/members/qr-codes", {
        "code": f"qr_xjh_{suffix}", "kind": "staff", "store_id": "loc_sh_xujiahui", "staff_id": "stf_xujiahui_01",
        "campaign_id": campaign["id"]}, headers=bearer(manager))
    assert status == 201, qr
    # A manager cannot make codes for another store, nor for staff of another store.
    status, _ = await membership.api.post("/members/qr-codes", {
        "code": f"qr_bad_{suffix}", "kind": "store", "store_id": "loc_sh_jingan"}, headers=bearer(manager))
    assert status == 403
    status, problem = await membership.api.post("/members/qr-codes", {
        "code": f"qr_bad_{suffix}", "kind": "staff", "store_id": "loc_sh_xujiahui", "staff_id": "stf_jingan_01"},
        headers=bearer(manager))
    assert status == 422 and problem["type"].endswith("unknown-staff")

    # The total cap is 1: the first shopper gets the coupon, the second is tagged but gets none.
    scans = []
    for _ in range(2):
        token, _member = await membership.member_login(unique_phone())
        status, body = await membership.api.post("/members/scan", {"code": qr["code"]}, headers=bearer(token))
        assert status == 200
        scans.append(body)
    assert len(scans[0]["coupons_issued"]) == 1 and scans[1]["coupons_issued"] == []
    assert scans[1]["coupon_skipped"] == "coupon-cap-reached"
    assert campaign["tag"] in scans[1]["tags"]

    # Campaign audience for notifications (service only).
    service = await membership.service_token("notifications")
    status, page = await membership.api.get("/members/internal/members", params={"tag": campaign["tag"], "limit": "1"},
                                            headers=bearer(service))
    assert status == 200 and len(page["items"]) == 1 and page["next_cursor"]
    status, rest = await membership.api.get("/members/internal/members", params={
        "tag": campaign["tag"], "cursor": page["next_cursor"]}, headers=bearer(service))
    assert {m["id"] for m in page["items"] + rest["items"]} == {s["member_id"] for s in scans}
    assert rest["next_cursor"] is None
    assert set(rest["items"][0]) >= {"id", "phone", "email", "locale", "marketing_consent"}
    status, _ = await membership.api.get("/members/internal/members", params={"tag": campaign["tag"]},
                                         headers=bearer(admin))
    assert status == 403

    # Duplicates and nonsense are clean 4xx.
    status, problem = await membership.api.post("/members/campaigns", {
        "id": campaign["id"], "name": "again", "tag": "x", "coupon_template_id": template["id"]}, headers=bearer(admin))
    assert status == 409
    status, problem = await membership.api.post("/members/coupon-templates", {
        "id": "cpt_bad", "name": "bad", "kind": "percent_off", "percent_off": 15, "valid_days": 7, "total_cap": 1},
        headers=bearer(admin))
    assert status == 422
    status, _ = await membership.api.post("/members/coupon-templates", {
        "id": "cpt_x", "name": "x", "kind": "amount_off", "amount_off": 1, "valid_days": 1, "total_cap": 1},
        headers=bearer(manager))
    assert status == 403


async def test_store_analytics_count_acquired_dormant_and_repeat_buyers(membership, bus_namespace):
    manager = await membership.staff_token("lujiazui.manager", "lujiazui-manager-pass")
    status, before = await membership.api.get("/members/stores/loc_sh_lujiazui/analytics", headers=bearer(manager))
    assert status == 200
    buyers = []
    for _ in range(2):
        token, member_id = await membership.member_login(unique_phone())
        await membership.api.post("/members/scan", {"code": "qr_staff_lujiazui_01"}, headers=bearer(token))
        buyers.append(member_id)
    orders = [(buyers[0], 1), (buyers[0], 2), (buyers[1], 3)]
    for member_id, n in orders:
        await publish(bus_namespace, "orders.order.completed", {
            "order_id": f"ord_{uuid.uuid4().hex[:12]}", "member_id": member_id, "channel": "store",
            "lines": [{"sku_id": "s", "category": "jeans", "qty": 1, "unit_price": 10_000}],
            "totals": {"total": 10_000}})

    async def counted():
        stats = [await membership.repos.members.stats_of(m) for m in buyers]
        return all(stats) and stats[0]["order_count"] == 2
    await eventually(counted)
    status, after = await membership.api.get("/members/stores/loc_sh_lujiazui/analytics", headers=bearer(manager))
    assert after["members_acquired"] == before["members_acquired"] + 2
    assert after["buyers"] == before["buyers"] + 2 and after["repeat_buyers"] == before["repeat_buyers"] + 1
    # The franchisee of the store sees it; another store's manager gets 404.
    franchisee = await membership.staff_token("dongfang.owner", "dongfang-owner-pass")
    assert (await membership.api.get("/members/stores/loc_sh_lujiazui/analytics",
                                     headers=bearer(franchisee))).status == 200
    other = await membership.staff_token("jingan.manager", "jingan-manager-pass")
    assert (await membership.api.get("/members/stores/loc_sh_lujiazui/analytics", headers=bearer(other))).status == 404
    # Staff list their store's members only.
    status, page = await membership.api.get("/members", params={"limit": "200"}, headers=bearer(manager))
    assert status == 200 and set(buyers) <= {m["id"] for m in page["items"]}
    assert all(m["attribution"]["store_id"] == "loc_sh_lujiazui" for m in page["items"])
    status, page = await membership.api.get("/members", params={"store_id": "loc_sh_lujiazui"}, headers=bearer(other))
    assert status == 200 and page["items"] == []


async def test_profile_consent_and_demo_members(membership):
    token, member_id = await membership.member_login(unique_phone())
    status, body = await membership.api.patch("/members/me", {"name": "Wang", "email": "w@example.com",
                                                              "marketing_consent": True}, headers=bearer(token))
    assert status == 200 and body["name"] == "Wang" and body["marketing_consent"] is True
    status, _ = await membership.api.patch("/members/me", {"email": "nope"}, headers=bearer(token))
    assert status == 422
    status, _ = await membership.api.get("/members/me")
    assert status == 401
    staff = await membership.staff_token("jingan.staff", "jingan-staff-pass")
    status, _ = await membership.api.get("/members/me", headers=bearer(staff))
    assert status == 403

    # The demo members carry their opening points as one ledger entry, and their binding.
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    status, lin = await membership.api.get("/members/mbr_demo_lin", headers=bearer(admin))
    assert status == 200 and lin["points_balance"] == 1500 and lin["attribution"]["staff_id"] == "stf_jingan_01"
    status, points = await membership.api.get("/members/mbr_demo_lin/points", headers=bearer(admin))
    assert [(e["kind"], e["amount"]) for e in points["items"]] == [("opening", 1500)]
    status, _ = await membership.api.get("/members/mbr_nobody", headers=bearer(admin))
    assert status == 404
    # Logging in with the demo phone reaches the demo member.
    _, demo_id = await membership.member_login("+8613800000001")
    assert demo_id == "mbr_demo_lin"


async def test_openapi_document_is_served(membership):
    status, document = await membership.api.get("/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    assert "/auth/member/token" in document["paths"] and "/members/scan" in document["paths"]
    assert not any("/internal/" in path for path in document["paths"])


async def test_hq_finds_a_member_by_phone_in_any_format(membership):
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    status, page = await membership.api.get("/members", params={"phone": "+86 138-0000-0002"}, headers=bearer(admin))
    assert status == 200 and [m["id"] for m in page["items"]] == ["mbr_demo_chen"]
    status, problem = await membership.api.get("/members", params={"phone": "not a phone"}, headers=bearer(admin))
    assert status == 422
    status, problem = await membership.api.get("/members", params={"limit": "0"}, headers=bearer(admin))
    assert status == 422


async def test_a_cursor_pages_its_own_list_only_and_an_edited_one_is_refused(membership):
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    status, page = await membership.api.get("/members", params={"limit": "1"}, headers=bearer(admin))
    assert status == 200 and len(page["items"]) == 1 and page["next_cursor"]
    status, following = await membership.api.get("/members", params={"limit": "1", "cursor": page["next_cursor"]},
                                                  headers=bearer(admin))
    assert status == 200 and following["items"][0]["id"] > page["items"][0]["id"]
    # The members search's cursor is neither the campaign audience's nor a ledger's.
    service = await membership.service_token("notifications")
    status, problem = await membership.api.get("/members/internal/members", params={"cursor": page["next_cursor"]},
                                               headers=bearer(service))
    assert status == 400 and problem["type"].endswith("bad-cursor")
    status, problem = await membership.api.get("/members/mbr_demo_lin/points", params={"cursor": page["next_cursor"]},
                                               headers=bearer(admin))
    assert status == 400 and problem["type"].endswith("bad-cursor")
    status, problem = await membership.api.get("/members", params={"cursor": "x" + page["next_cursor"][1:]},
                                               headers=bearer(admin))
    assert status == 400 and problem["type"].endswith("bad-cursor")


async def test_hq_creates_a_staff_account_that_can_log_in(membership):
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    suffix = uuid.uuid4().hex[:6]
    account = {"id": f"stf_new_{suffix}", "username": f"new.{suffix}", "password": "a-long-password",
               "name": "New Assistant", "roles": ["store_staff"], "store_ids": ["loc_sh_jingan"]}
    status, created = await membership.api.post("/members/staff", account, headers=bearer(admin))
    assert status == 201 and "password" not in created and "password_hash" not in created
    token = await membership.staff_token(account["username"], account["password"])
    status, _ = await membership.api.get("/members", headers=bearer(token))
    assert status == 200
    status, problem = await membership.api.post("/members/staff", account, headers=bearer(admin))
    assert status == 409 and problem["type"].endswith("staff-exists")
    status, _ = await membership.api.post("/members/staff", {**account, "id": "stf_x", "username": "x.y.z",
                                                         "store_ids": []}, headers=bearer(admin))
    assert status == 422
    status, _ = await membership.api.post("/members/staff", {**account, "id": "stf_y", "username": "y.y.y"},
                                          headers=bearer(token))
    assert status == 403
    status, listing = await membership.api.get("/members/staff", headers=bearer(admin))
    assert account["id"] in {s["id"] for s in listing["items"]}
    assert all("password_hash" not in s for s in listing["items"])


async def test_staff_change_their_password_and_old_logins_end(membership):
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    suffix = uuid.uuid4().hex[:6]
    account = {"id": f"stf_pw_{suffix}", "username": f"pw.{suffix}", "password": "first-password",
               "name": "Pw", "roles": ["store_manager"], "store_ids": ["loc_sh_jingan"]}
    assert (await membership.api.post("/members/staff", account, headers=bearer(admin))).status == 201
    status, login = await membership.api.post("/auth/staff/token", {"username": account["username"],
                                                                "password": "first-password"})
    token = login["access_token"]
    status, problem = await membership.api.post("/auth/staff/password", {"current_password": "wrong-password",
                                                                         "new_password": "second-password"},
                                                headers=bearer(token))
    assert status == 401
    status, _ = await membership.api.post("/auth/staff/password", {"current_password": "first-password",
                                                                   "new_password": "second-password"},
                                          headers=bearer(token))
    assert status == 204
    status, _ = await membership.api.post("/auth/staff/token", {"username": account["username"],
                                                            "password": "first-password"})
    assert status == 401
    assert await membership.staff_token(account["username"], "second-password")
    status, _ = await membership.api.post("/auth/token/refresh", {"refresh_token": login["refresh_token"]})
    assert status == 401
