"""Coupon rules: template validation, discounts by scope and channel, lifecycle transitions."""
from __future__ import annotations

import pytest

from services.membership.domain import coupons as c
from services.membership.domain.errors import MembershipError

NOW = 1_000 * c.DAY_MS
LINES = [{"sku_id": "tee", "category": "tees", "qty": 2, "unit_price": 9_900},
         {"sku_id": "jean", "category": "jeans", "qty": 1, "unit_price": 39_900}]


def coupon(**kw):
    base = {"_id": "cpn_1", "template_id": "t1", "state": "issued", "kind": "amount_off", "amount_off": 2000,
            "threshold": 19_900, "scope_type": "all", "scope_values": [], "channel": "any",
            "valid_from_ms": NOW - 1, "valid_until_ms": NOW + c.DAY_MS}
    base.update(kw)
    return base


def test_amount_off_needs_the_threshold_of_eligible_goods():
    assert c.discount_for(coupon(), LINES, "app", NOW) == 2000
    with pytest.raises(MembershipError) as refused:
        c.discount_for(coupon(threshold=100_000), LINES, "app", NOW)
    assert refused.value.code == "coupon-not-applicable"


def test_percent_off_is_scoped_to_categories_and_capped():
    tees = coupon(kind="percent_off", percent_off=10, max_off=3_000, threshold=0, scope_type="categories",
                  scope_values=["tees"])
    assert c.discount_for(tees, LINES, "app", NOW) == 1_980  # 10 % of the tees only (19 800)
    capped = coupon(kind="percent_off", percent_off=10, max_off=1_500, threshold=0, scope_type="categories",
                    scope_values=["tees"])
    assert c.discount_for(capped, LINES, "app", NOW) == 1_500
    skus = coupon(kind="percent_off", percent_off=10, max_off=10_000, threshold=0, scope_type="skus",
                  scope_values=["jean"])
    assert c.discount_for(skus, LINES, "app", NOW) == 3_990


def test_channel_and_validity_are_enforced():
    with pytest.raises(MembershipError) as refused:
        c.discount_for(coupon(channel="online"), LINES, "store", NOW)
    assert refused.value.code == "coupon-not-applicable"
    assert c.discount_for(coupon(channel="in_store"), LINES, "store", NOW) == 2000
    with pytest.raises(MembershipError) as refused:
        c.discount_for(coupon(valid_until_ms=NOW), LINES, "app", NOW)
    assert refused.value.code == "coupon-unavailable"
    with pytest.raises(MembershipError) as refused:
        c.discount_for(coupon(state="locked"), LINES, "app", NOW)
    assert refused.value.code == "coupon-unavailable"


def test_coupons_of_one_template_do_not_stack_and_never_exceed_the_subtotal():
    with pytest.raises(MembershipError):
        c.apply_coupons([coupon(), coupon(_id="cpn_2")], LINES, "app", NOW)
    big = coupon(_id="cpn_big", template_id="t2", amount_off=10**6, threshold=0)
    applied = c.apply_coupons([coupon(), big], LINES, "app", NOW)
    assert sum(a["discount"] for a in applied) == 9_900 * 2 + 39_900


def test_each_coupon_says_which_lines_it_discounts_and_never_takes_more_than_they_have_left():
    jeans_only = coupon(_id="cpn_j", template_id="tj", amount_off=50_000, threshold=0, scope_type="skus",
                        scope_values=["jean"])
    applied = c.apply_coupons([jeans_only], LINES, "app", NOW)
    assert applied == [{"code": "cpn_j", "discount": 39_900, "sku_ids": ["jean"]}]
    # a coupon on everything first, then one on the jeans: the second gets at most what the jeans have left
    # if the first had landed on them entirely (39 900 - 2 000)
    applied = c.apply_coupons([coupon(), jeans_only], LINES, "app", NOW)
    assert [a["discount"] for a in applied] == [2_000, 37_900]
    assert applied[0]["sku_ids"] == ["tee", "jean"]


def test_lifecycle_transitions():
    issued = coupon()
    c.transition(issued, c.LOCKED)
    with pytest.raises(MembershipError):
        c.transition(coupon(state="redeemed"), c.LOCKED)
    with pytest.raises(MembershipError):
        c.transition(coupon(state="expired"), c.ISSUED)


def test_templates_are_validated():
    good = {"kind": "percent_off", "percent_off": 10, "max_off": 3000, "scope_type": "categories",
            "scope_values": ["tees"], "channel": "online", "valid_days": 14, "per_member_limit": 3, "total_cap": 5}
    c.validate_template(good)
    for broken in ({"max_off": 0}, {"scope_values": []}, {"channel": "mars"}, {"valid_days": 0}, {"kind": "free"}):
        with pytest.raises(MembershipError):
            c.validate_template({**good, **broken})


def test_validity_of_an_issued_coupon_is_bounded_by_the_template():
    template = {"valid_days": 30, "valid_until_ms": NOW + 10 * c.DAY_MS}
    assert c.coupon_validity(template, NOW) == (NOW, NOW + 10 * c.DAY_MS)
    assert c.coupon_validity({"valid_days": 30}, NOW) == (NOW, NOW + 30 * c.DAY_MS)
