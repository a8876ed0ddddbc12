"""Commission steering through the scan flow is refused (membership over real HTTP, real broker and wire server).

The attacks: clerks create members from made-up channel identities (each taking the campaign coupon), pre-claim
a shopper's identity so that the real shopper can never link it, flip a member's marketing consent, and name
any assistant's poster QR code at checkout. Now a staff identity scan takes no coupon, changes no consent, is
counted per hour and audited; an identity staff named yields to the member who links it; and a checkout credits
a QR only through the short-lived scan token issued to that member at scan time.
"""
from __future__ import annotations

import uuid

import pytest

from tests.integration.membership.conftest import bearer, unique_phone


def made_up() -> dict:
    return {"kind": "wechat_openid", "value": f"wx_fake_{uuid.uuid4().hex}"}


async def test_a_clerk_cannot_farm_coupons_or_flip_consent_with_made_up_identities(membership):
    clerk = bearer(await membership.staff_token("jingan.staff", "jingan-staff-pass"))
    created = []
    for _ in range(3):
        status, scan = await membership.api.post("/members/scan", {"code": "qr_campaign_welcome",
                                                                   "identity": made_up()}, headers=clerk)
        assert status == 201 and scan["coupons_issued"] == [] and scan["coupon_skipped"] == "member-not-present"
        created.append(scan["member_id"])
    for member_id in created:
        assert await membership.repos.coupons.of_member(member_id) == []

    # A member who said no to marketing: a clerk naming their identity cannot say yes for them.
    token, member_id = await membership.member_login(unique_phone())
    identity = made_up()
    assert (await membership.api.post("/members/me/identities", identity, headers=bearer(token))).status == 200
    before = await membership.repos.members.get(member_id)
    status, problem = await membership.api.post("/members/scan", {"code": "qr_store_jingan", "identity": identity,
                                                                  "marketing_consent": True}, headers=clerk)
    assert status == 403 and problem["type"].endswith("/consent-by-member-only")
    after = await membership.repos.members.get(member_id)
    assert (after["marketing_consent"], after["marketing_consent_at_ms"]) == (
        before["marketing_consent"], before["marketing_consent_at_ms"])
    # The member changes it themselves, in their app.
    status, me = await membership.api.patch("/members/me", {"marketing_consent": True}, headers=bearer(token))
    assert status == 200

    # Every staff identity scan is audited (by digest, not a second copy of the openid).
    trail = await membership.repos.scans.audit.find({"member_id": {"$in": created}}).to_list(10)
    assert len(trail) == 3 and len({entry["staff_id"] for entry in trail}) == 1 and trail[0]["staff_id"]
    assert all(entry["action"] == "scanned" and entry["value_digest"] and "value" not in entry for entry in trail)


@pytest.fixture
async def strict_membership(start_membership):
    return await start_membership(demo=True, staff_identity_scans_per_hour=3)


async def test_staff_identity_scans_are_limited_per_staff_member(strict_membership):
    membership = strict_membership
    clerk = bearer(await membership.staff_token("jingan.staff", "jingan-staff-pass"))
    other = bearer(await membership.staff_token("lujiazui.staff", "lujiazui-staff-pass"))
    for _ in range(3):
        status, _ = await membership.api.post("/members/scan", {"code": "qr_store_jingan", "identity": made_up()},
                                              headers=clerk)
        assert status == 201
    identity = made_up()
    status, problem = await membership.api.post("/members/scan", {"code": "qr_store_jingan", "identity": identity},
                                                headers=clerk)
    assert status == 429 and problem["type"].endswith("/identity-scan-limit"), problem
    assert await membership.repos.members.member_id_for(identity["kind"], identity["value"]) is None
    # Another staff member has their own allowance; a member scanning themselves is never limited.
    assert (await membership.api.post("/members/scan", {"code": "qr_store_jingan", "identity": identity},
                                      headers=other)).status == 201
    token, _ = await membership.member_login(unique_phone())
    for _ in range(5):
        assert (await membership.api.post("/members/scan", {"code": "qr_store_jingan"},
                                          headers=bearer(token))).status == 200
    async with membership.api.http.get(membership.api.base + "/metrics") as response:
        assert 'o2o_membership_staff_identity_scans_total{outcome="limited"}' in await response.text()


async def test_an_identity_a_clerk_named_first_yields_to_the_member_who_links_it(membership):
    clerk = bearer(await membership.staff_token("lujiazui.staff", "lujiazui-staff-pass"))
    shoppers_openid = made_up()
    status, squat = await membership.api.post("/members/scan", {"code": "qr_staff_lujiazui_01",
                                                                "identity": shoppers_openid}, headers=clerk)
    assert status == 201
    # The real shopper logs in with their phone and links their WeChat identity: it is theirs now.
    token, member_id = await membership.member_login(unique_phone())
    status, me = await membership.api.post("/members/me/identities", shoppers_openid, headers=bearer(token))
    assert status == 200, me
    assert await membership.repos.members.member_id_for(shoppers_openid["kind"], shoppers_openid["value"]) == member_id
    # Later staff scans of that identity find the real member, not the squatter (nor the squatter's binding).
    status, scan = await membership.api.post("/members/scan", {"code": "qr_staff_lujiazui_01",
                                                               "identity": shoppers_openid}, headers=clerk)
    assert status == 200 and scan["member_id"] == member_id != squat["member_id"]
    # An identity a member linked themselves is not taken away by another member.
    other_token, _ = await membership.member_login(unique_phone())
    status, problem = await membership.api.post("/members/me/identities", shoppers_openid,
                                                headers=bearer(other_token))
    assert status == 409 and problem["type"].endswith("identity-taken")


async def test_a_scan_token_is_issued_to_the_scanning_member_and_only_credits_them(membership):
    token, member_id = await membership.member_login(unique_phone())
    status, scan = await membership.api.post("/members/scan", {"code": "qr_staff_lujiazui_01"}, headers=bearer(token))
    assert status == 200 and scan["scan_token"] and scan["scan_token_expires_at"].endswith("Z")
    service = bearer(await membership.service_token())
    path = f"/members/internal/members/{member_id}/attribution?scan_token={scan['scan_token']}"
    status, attribution = await membership.api.get(path, headers=service)
    assert status == 200 and attribution["scan"] == {"code": "qr_staff_lujiazui_01", "store_id": "loc_sh_lujiazui",
                                                     "staff_id": "stf_lujiazui_01", "campaign_id": "cmp_welcome"}
    # Another member's checkout naming it, or a made-up token: no scan to credit.
    _, other_id = await membership.member_login(unique_phone())
    status, attribution = await membership.api.get(
        f"/members/internal/members/{other_id}/attribution?scan_token={scan['scan_token']}", headers=service)
    assert status == 200 and attribution["scan"] is None
    status, attribution = await membership.api.get(
        f"/members/internal/members/{member_id}/attribution?scan_token=made-up-token-0123456789", headers=service)
    assert status == 200 and attribution["scan"] is None
    # Staff identity scans give no token: a checkout credits only the member's own scan.
    clerk = bearer(await membership.staff_token("lujiazui.staff", "lujiazui-staff-pass"))
    status, staff_scan = await membership.api.post("/members/scan", {"code": "qr_staff_lujiazui_01",
                                                                     "identity": made_up()}, headers=clerk)
    assert status == 201 and staff_scan["scan_token"] is None
