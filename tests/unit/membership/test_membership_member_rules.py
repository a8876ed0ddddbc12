"""Member rules: scans (first touch), merging, dormancy, tiers, one-time codes, token claims."""
from __future__ import annotations

import pytest

from services.membership.domain import members as m
from services.membership.domain import otp
from services.membership.domain import tokens
from services.membership.domain.errors import MembershipError
from services.membership.domain.tiers import tier_for, tier_ladder

DAY = m.DAY_MS
NOW = 10_000 * DAY
STAFF_QR = {"_id": "qr1", "kind": "staff", "store_id": "loc_a", "staff_id": "stf_a", "campaign_id": "cmp"}
CAMPAIGN = {"_id": "cmp", "tag": "welcome", "coupon_template_id": "cpt"}


def member(**kw):
    base = {"_id": "mbr_1", "tags": [], "bound_store_id": None, "bound_staff_id": None, "bound_until_ms": 0,
            "bound_at_ms": 0, "created_at_ms": NOW - DAY, "points_balance": 0, "last_activity_ms": NOW}
    base.update(kw)
    return base


def test_first_scan_binds_tags_and_grants_the_campaign():
    outcome = m.scan(member(), STAFF_QR, CAMPAIGN, NOW, 365)
    assert outcome.bind and (outcome.store_id, outcome.staff_id, outcome.campaign_id) == ("loc_a", "stf_a", "cmp")
    assert outcome.bound_until_ms == NOW + 365 * DAY
    assert outcome.tags == ["store:loc_a", "staff:stf_a", "campaign:cmp", "welcome"]
    assert outcome.grant_campaign_id == "cmp"


def test_a_later_scan_does_not_move_an_active_binding_but_a_lapsed_one_rebinds():
    bound = member(bound_store_id="loc_b", bound_until_ms=NOW + DAY)
    assert not m.scan(bound, STAFF_QR, CAMPAIGN, NOW, 365).bind
    lapsed = member(bound_store_id="loc_b", bound_until_ms=NOW - 1)
    assert m.scan(lapsed, STAFF_QR, CAMPAIGN, NOW, 365).bind


def test_a_campaign_only_qr_tags_without_binding():
    outcome = m.scan(member(), {"_id": "q", "kind": "campaign", "campaign_id": "cmp"}, CAMPAIGN, NOW, 365)
    assert not outcome.bind and outcome.grant_campaign_id == "cmp"


def test_merge_keeps_the_earliest_active_binding_latest_consent_and_sums_points():
    older = member(_id="mbr_a", created_at_ms=NOW - 10 * DAY, bound_store_id="loc_a", bound_at_ms=NOW - 9 * DAY,
                   bound_until_ms=NOW + DAY, tags=["x"], points_balance=70, order_count=2, marketing_consent=False,
                   marketing_consent_at_ms=NOW - 9 * DAY)
    newer = member(_id="mbr_b", created_at_ms=NOW - DAY, bound_store_id="loc_b", bound_at_ms=NOW - DAY,
                   bound_until_ms=NOW + 300 * DAY, tags=["x", "y"], points_balance=30, order_count=1, marketing_consent=True,
                   marketing_consent_at_ms=NOW - DAY)
    survivor, absorbed = m.choose_survivor(newer, older)
    assert survivor["_id"] == "mbr_a" and absorbed["_id"] == "mbr_b"
    merged = m.merge(survivor, absorbed, NOW)
    assert merged["bound_store_id"] == "loc_a" and merged["tags"] == ["x", "y"]
    assert merged["points_balance"] == 100 and merged["marketing_consent"] is True
    assert merged["order_count"] == 3


def test_dormancy_and_analytics_helpers():
    assert m.is_dormant(NOW - 180 * DAY, NOW, 180) and not m.is_dormant(NOW - 179 * DAY, NOW, 180)
    assert m.average_basket(30_000, 3) == 10_000 and m.average_basket(0, 0) == 0
    assert m.repeat_purchase_rate(4, 1) == 0.25 and m.repeat_purchase_rate(0, 0) == 0.0
    assert m.top_categories({"tees": 3, "jeans": 5, "caps": 3}) == [
        {"category": "jeans", "units": 5}, {"category": "caps", "units": 3}, {"category": "tees", "units": 3}]


def test_tiers_follow_the_rolling_amount():
    ladder = tier_ladder({"member": 0, "silver": 100_000, "gold": 500_000}, {"silver": 1.2, "gold": 1.5})
    assert tier_for(0, ladder).name == "member"
    assert tier_for(100_000, ladder).name == "silver" and tier_for(100_000, ladder).multiplier == 1.2
    assert tier_for(10**9, ladder).name == "gold"
    with pytest.raises(ValueError):
        tier_ladder({"silver": 10}, {})


def test_otp_request_window_limits_codes_per_phone():
    policy = otp.OtpPolicy(max_requests=2, request_window_s=60)
    start, count = otp.next_request_window(0, 0, NOW, policy)
    start, count = otp.next_request_window(start, count, NOW + 1, policy)
    with pytest.raises(MembershipError) as refused:
        otp.next_request_window(start, count, NOW + 2, policy)
    assert refused.value.code == "otp-rate-limited" and refused.value.extensions["retry_after_s"] >= 1
    assert otp.next_request_window(start, count, NOW + 60_000, policy) == (NOW + 60_000, 1)


def test_otp_codes_are_judged_by_digest_expiry_and_attempts():
    policy = otp.OtpPolicy(max_attempts=3)
    digest = otp.code_digest("+8613800000000", "123456", "pepper")
    challenge = {"digest": digest, "attempts": 1, "expires_at_ms": NOW + 1, "used": False}
    otp.check_code(challenge, digest, NOW, policy)
    wrong = otp.code_digest("+8613800000000", "654321", "pepper")
    with pytest.raises(MembershipError) as refused:
        otp.check_code(challenge, wrong, NOW, policy)
    assert refused.value.code == "otp-invalid" and refused.value.extensions["attempts_remaining"] == 2
    with pytest.raises(MembershipError) as refused:
        otp.check_code(challenge, digest, NOW + 1, policy)
    assert refused.value.code == "otp-expired"
    assert otp.new_code(lambda n: 42) == "000042"
    assert otp.normalize_phone("+86 138-0000-0000") == "+8613800000000"
    with pytest.raises(MembershipError):
        otp.normalize_phone("13800000000")


def test_token_claims_carry_identity_and_lifetime():
    staff = {"_id": "stf_1", "roles": ["franchisee"], "store_ids": ["loc_b", "loc_a"], "franchisee_id": "frn_1"}
    body = tokens.claims(now_s=1000, ttl_s=60, issuer="iss", audience="aud", **tokens.staff_identity(staff))
    assert body == {"sub": "stf_1", "roles": ["franchisee"], "staff_id": "stf_1", "store_ids": ["loc_a", "loc_b"],
                    "franchisee_id": "frn_1", "iss": "iss", "aud": "aud", "iat": 1000, "iat_ms": 1_000_000, "nbf": 1000,
                    "exp": 1060}
    member_claims = tokens.claims(now_s=0, ttl_s=1, issuer="i", audience="a", **tokens.member_identity("mbr_1"))
    assert member_claims["roles"] == ["customer"] and member_claims["member_id"] == "mbr_1"
    assert tokens.token_answer("t", 60) == {"access_token": "t", "token_type": "Bearer", "expires_in": 60}
