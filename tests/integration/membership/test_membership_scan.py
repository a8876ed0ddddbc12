"""A new shopper is scanned in by an assistant (staff name their WeChat identity): member created, tagged,
bound to that store and assistant, no coupon until the member scans themselves, then issued once; a later
scan of another store does not move the binding (first touch wins)."""
from __future__ import annotations

import asyncio
import uuid

from services.membership.usecases import TOKENS
from tests.integration.membership.conftest import bearer
from tests.support import EventTap, eventually


async def test_scan_of_an_assistants_qr_registers_tags_binds_and_issues_the_campaign_coupon_once(
        membership, bus_namespace):
    openid = f"wx_{uuid.uuid4().hex}"
    scan = {"code": "qr_staff_jingan_01", "identity": {"kind": "wechat_openid", "value": openid}}
    staff = bearer(await membership.staff_token("jingan.staff", "jingan-staff-pass"))
    async with EventTap(bus_namespace, "membership.#") as tap:
        status, first = await membership.api.post("/members/scan", scan, headers=staff)
        assert status == 201, first
        member_id = first["member_id"]
        assert first["created"] and first["bound_now"]
        assert {"store:loc_sh_jingan", "staff:stf_jingan_01", "campaign:cmp_welcome",
                "welcome-2026"} <= set(first["tags"])
        assert first["attribution"]["store_id"] == "loc_sh_jingan"
        assert first["attribution"]["staff_id"] == "stf_jingan_01"
        assert first["attribution"]["campaign_id"] == "cmp_welcome"
        assert first["coupons_issued"] == [] and first["coupon_skipped"] == "member-not-present"
        assert first["scan_token"] is None  # a checkout credits only the member's own scan

        # The member scans themselves (and concurrently): the coupon once, no second member.
        token = membership[TOKENS].for_member(member_id)["access_token"]
        own = {"code": "qr_staff_jingan_01", "marketing_consent": True}
        again = await asyncio.gather(*[membership.api.post("/members/scan", own, headers=bearer(token))
                                       for _ in range(5)])
        assert all(status == 200 and body["member_id"] == member_id for status, body in again)
        assert sum(len(body["coupons_issued"]) for _, body in again) == 1
        assert [c["template_id"] for _, body in again for c in body["coupons_issued"]] == ["cpt_welcome_20"]

        # A later scan at another store (same campaign) tags, but does not move the binding or re-issue.
        status, later = await membership.api.post("/members/scan", {**scan, "code": "qr_staff_lujiazui_01"},
                                                  headers=staff)
        assert status == 200 and not later["bound_now"] and later["coupons_issued"] == []
        assert "store:loc_sh_lujiazui" in later["tags"]
        assert later["attribution"]["store_id"] == "loc_sh_jingan"

        # What orders asks for attribution.
        service = await membership.service_token()
        status, attribution = await membership.api.get(f"/members/internal/members/{member_id}/attribution",
                                                       headers=bearer(service))
        assert status == 200
        assert (attribution["store_id"], attribution["staff_id"], attribution["campaign_id"]) == \
            ("loc_sh_jingan", "stf_jingan_01", "cmp_welcome")
        assert attribution["bound_until"].endswith("Z")

        coupons = await membership.repos.coupons.of_member(member_id)
        assert len(coupons) == 1 and coupons[0]["state"] == "issued"

        # The facts reached the broker exactly once each.
        await eventually(lambda: tap.of("membership.coupon.issued", member_id=member_id)
                         and tap.of("membership.member.registered", member_id=member_id))
        assert len(tap.of("membership.member.registered", member_id=member_id)) == 1
        assert len(tap.of("membership.coupon.issued", member_id=member_id)) == 1
        registered = tap.of("membership.member.registered", member_id=member_id)[0]
        assert registered["data"]["store_id"] == "loc_sh_jingan" and registered["data"]["source"] == "scan"


async def test_logged_in_member_scans_as_themselves_and_store_qr_binds_without_coupon(membership):
    token, member_id = await membership.member_login("+86137" + f"{uuid.uuid4().int % 10**8:08d}")
    status, body = await membership.api.post("/members/scan", {"code": "qr_store_jingan"}, headers=bearer(token))
    assert status == 200 and body["member_id"] == member_id and body["bound_now"]
    assert body["attribution"]["store_id"] == "loc_sh_jingan" and body["attribution"]["staff_id"] is None
    assert body["coupons_issued"] == []
    status, me = await membership.api.get("/members/me", headers=bearer(token))
    assert "store:loc_sh_jingan" in me["tags"] and me["attribution"]["store_id"] == "loc_sh_jingan"
    # Store staff of that store see the member; staff of another store get 404, not the member.
    jingan = await membership.staff_token("jingan.staff", "jingan-staff-pass")
    xujiahui = await membership.staff_token("xujiahui.staff", "xujiahui-staff-pass")
    assert (await membership.api.get(f"/members/{member_id}", headers=bearer(jingan))).status == 200
    assert (await membership.api.get(f"/members/{member_id}", headers=bearer(xujiahui))).status == 404


async def test_bad_scans_are_clean_4xx_and_change_nothing(membership):
    staff = bearer(await membership.staff_token("jingan.staff", "jingan-staff-pass"))
    status, problem = await membership.api.post("/members/scan", {"code": "qr_nope", "identity": {
        "kind": "wechat_openid", "value": "wx_x"}}, headers=staff)
    assert status == 404 and problem["type"].endswith("qr-code-not-found")
    status, problem = await membership.api.post("/members/scan", {"code": "qr_store_jingan"})
    assert status == 401
    status, problem = await membership.api.post("/members/scan", {"code": "qr_store_jingan", "identity": {
        "kind": "wechat_openid", "value": "wx_x"}})
    assert status == 401  # only staff name a shopper's identity
    status, problem = await membership.api.post("/members/scan", {"code": "qr_store_jingan", "identity": {
        "kind": "phone", "value": "+8613800000009"}}, headers=staff)
    assert status == 422
    assert await membership.repos.members.member_id_for("wechat_openid", "wx_x") is None


async def test_concurrent_first_scans_by_one_new_shopper_make_one_member_and_one_coupon(membership):
    openid = f"wx_{uuid.uuid4().hex}"
    scan = {"code": "qr_staff_jingan_01", "identity": {"kind": "wechat_openid", "value": openid}}
    staff = bearer(await membership.staff_token("jingan.staff", "jingan-staff-pass"))
    answers = await asyncio.gather(*[membership.api.post("/members/scan", scan, headers=staff) for _ in range(10)])
    assert sorted(status for status, _ in answers) == [200] * 9 + [201]
    member_ids = {body["member_id"] for _, body in answers}
    assert len(member_ids) == 1
    assert sum(len(body["coupons_issued"]) for _, body in answers) == 0  # the member was not there
    (member_id,) = member_ids
    assert await membership.repos.coupons.of_member(member_id) == []
    assert await membership.repos.members.count({"source": "scan", "_id": member_id}) == 1


async def test_idempotency_key_replays_a_scan(membership):
    openid = f"wx_{uuid.uuid4().hex}"
    scan = {"code": "qr_store_jingan", "identity": {"kind": "wechat_openid", "value": openid}}
    headers = {"Idempotency-Key": f"scan-{openid}",
               **bearer(await membership.staff_token("jingan.staff", "jingan-staff-pass"))}
    status, first = await membership.api.post("/members/scan", scan, headers=headers)
    status2, second = await membership.api.post("/members/scan", scan, headers=headers)
    assert status == status2 == 201 and first == second
    status, problem = await membership.api.post("/members/scan", {**scan, "code": "qr_campaign_welcome"},
                                                headers=headers)
    assert status == 422 and problem["type"].endswith("idempotency-key-reused")
