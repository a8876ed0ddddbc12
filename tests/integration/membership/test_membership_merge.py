"""Merging two members keeps every point and coupon exactly once."""
from __future__ import annotations

import uuid

from services.membership.usecases import TOKENS
from tests.integration.membership.conftest import bearer, unique_phone
from tests.support import EventTap, eventually


async def test_verifying_a_phone_known_as_another_member_merges_them_keeping_everything_once(
        membership, bus_namespace):
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    # Member A: registered by phone (older), with points and a campaign coupon, bound to Jing'an.
    phone = unique_phone()
    token_a, member_a = await membership.member_login(phone)
    await membership.api.post(f"/members/{member_a}/points/adjustments", {"delta": 700, "note": "a"},
                              headers=bearer(admin))
    _, scan_a = await membership.api.post("/members/scan", {"code": "qr_staff_jingan_01"}, headers=bearer(token_a))
    coupon_a = scan_a["coupons_issued"][0]["code"]

    # Member B: the same person, registered later by Lujiazui's staff by WeChat openid, bound to Lujiazui; the
    # welcome coupon comes with B's own scan, plus points and a coupon of another template.
    openid = f"wx_{uuid.uuid4().hex}"
    lujiazui = await membership.staff_token("lujiazui.staff", "lujiazui-staff-pass")
    _, scan_b = await membership.api.post("/members/scan", {"code": "qr_staff_lujiazui_01",
                                                        "identity": {"kind": "wechat_openid", "value": openid}},
                                          headers=bearer(lujiazui))
    member_b = scan_b["member_id"]
    token_b = membership[TOKENS].for_member(member_b)["access_token"]
    _, own_scan_b = await membership.api.post("/members/scan", {"code": "qr_staff_lujiazui_01"},
                                              headers=bearer(token_b))
    coupon_b_welcome = own_scan_b["coupons_issued"][0]["code"]
    await membership.api.post(f"/members/{member_b}/points/adjustments", {"delta": 300, "note": "b"},
                              headers=bearer(admin))
    status, extra = await membership.api.post(f"/members/{member_b}/coupons", {"template_id": "cpt_tees_10pct"},
                                              headers=bearer(admin))
    assert status == 201
    total_points = 1000
    all_coupons = {coupon_a, coupon_b_welcome, extra["code"]}

    async with EventTap(bus_namespace, "membership.member.merged") as tap:
        # B (logged in as B) verifies A's phone: the phone proves they are one person.
        _, sent = await membership.api.post("/auth/member/otp", {"phone": phone})
        status, linked = await membership.api.post("/members/me/phone", {"phone": phone, "code": sent["dev_code"]},
                                                   headers=bearer(token_b))
        assert status == 200, linked
        assert linked["merged"] and linked["member_id"] == member_a and linked["merged_member_id"] == member_b
        await eventually(lambda: tap.of("membership.member.merged", member_id=member_a))
        assert tap.of("membership.member.merged")[0]["data"]["merged_member_id"] == member_b

    survivor = await membership.repos.members.get(member_a)
    absorbed = await membership.repos.members.get(member_b)
    assert survivor["points_balance"] == total_points == await membership.repos.ledger.sum_for(member_a)
    assert absorbed["status"] == "merged" and absorbed["merged_into"] == member_a
    assert await membership.repos.ledger.sum_for(member_b) == 0
    coupons = await membership.repos.coupons.of_member(member_a)
    assert sorted(c["_id"] for c in coupons) == sorted(all_coupons)  # each exactly once
    assert await membership.repos.coupons.of_member(member_b) == []
    # First touch wins across the merge: A was bound first (Jing'an).
    assert survivor["bound_store_id"] == "loc_sh_jingan"
    assert {"store:loc_sh_jingan", "store:loc_sh_lujiazui"} <= set(survivor["tags"])
    # Both identities now lead to the survivor, and the absorbed id still resolves.
    assert await membership.repos.members.member_id_for("wechat_openid", openid) == member_a
    assert await membership.repos.members.member_id_for("phone", phone) == member_a
    status, me = await membership.api.get("/members/me", headers=bearer(linked["token"]["access_token"]))
    assert me["id"] == member_a and me["points_balance"] == total_points
    status, me_via_old = await membership.api.get("/members/me", headers=bearer(token_b))
    assert me_via_old["id"] == member_a

    # Merging again is refused cleanly and changes nothing.
    status, problem = await membership.api.post("/members/merges", {"member_id": member_a, "other_member_id": member_b},
                                                headers=bearer(admin))
    assert status == 422 and problem["type"].endswith("same-member")
    assert (await membership.repos.members.get(member_a))["points_balance"] == total_points


async def test_hq_merge_of_two_members_by_id(membership):
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    _, first = await membership.member_login(unique_phone())
    _, second = await membership.member_login(unique_phone())
    for member, points in ((first, 120), (second, 80)):
        await membership.api.post(f"/members/{member}/points/adjustments", {"delta": points, "note": "x"},
                                  headers=bearer(admin))
    status, merged = await membership.api.post("/members/merges", {"member_id": second, "other_member_id": first},
                                               headers=bearer(admin), idempotency_key="merge-1")
    assert status == 200 and merged["member_id"] == first and merged["points_balance"] == 200
    status, replay = await membership.api.post("/members/merges", {"member_id": second, "other_member_id": first},
                                               headers=bearer(admin), idempotency_key="merge-1")
    assert status == 200 and replay == merged
    assert await membership.repos.ledger.sum_for(first) == 200


async def test_a_channel_identity_links_once_and_never_to_two_members(membership):
    token_a, member_a = await membership.member_login(unique_phone())
    token_b, _ = await membership.member_login(unique_phone())
    openid = f"wx_{uuid.uuid4().hex}"
    link = {"kind": "wechat_openid", "value": openid}
    status, me = await membership.api.post("/members/me/identities", link, headers=bearer(token_a))
    assert status == 200 and {"kind": "wechat_openid", "value": openid, "verified": False} in me["identities"]
    assert (await membership.api.post("/members/me/identities", link,
                                      headers=bearer(token_a))).status == 200  # idempotent
    status, problem = await membership.api.post("/members/me/identities", link, headers=bearer(token_b))
    assert status == 409 and problem["type"].endswith("identity-taken")
    # A later staff scan naming that identity finds member A.
    jingan = await membership.staff_token("jingan.staff", "jingan-staff-pass")
    status, scan = await membership.api.post("/members/scan", {"code": "qr_store_jingan", "identity": link},
                                             headers=bearer(jingan))
    assert status == 200 and scan["member_id"] == member_a
