"""Numbers a client can trust, through the gateway: line discounts only on the lines a coupon applies to,
the points an order really redeemed, and a refusal that quotes what the shopper asked for.

Prices of the demo catalogue: the classic tee (M) 9,900 fen, the slim jeans (30) 29,900 fen.
"""
from __future__ import annotations

import uuid

from tests.e2e.client import Api, new_phone

TEE_M = "sku_tee_classic_whi_m"
JEANS_30 = "sku_jeans_slim_ind_30"
JINGAN = "loc_sh_jingan"


async def _admin(anonymous: Api) -> Api:
    return await anonymous.staff_login("hq.admin", "hq-admin-pass")


async def _new_member(anonymous: Api) -> tuple[Api, str]:
    member = await anonymous.member_login(new_phone())
    return member, (await member.ok("GET", "/members/me"))["id"]


async def test_a_coupon_for_one_sku_discounts_that_line_only(http, api):
    anonymous = Api(http, api)
    admin = await _admin(anonymous)
    template = f"cpt_jeans_{uuid.uuid4().hex[:8]}"
    await admin.ok("POST", "/members/coupon-templates", {
        "id": template, "name": "5 yuan off the slim jeans", "kind": "amount_off", "amount_off": 500,
        "scope": {"type": "skus", "skus": [JEANS_30]}, "valid_days": 30, "total_cap": 10})
    member, member_id = await _new_member(anonymous)
    coupon = await admin.ok("POST", f"/members/{member_id}/coupons", {"template_id": template})

    order = await member.ok("POST", "/orders", {
        "channel": "app", "lines": [{"sku_id": TEE_M, "qty": 1}, {"sku_id": JEANS_30, "qty": 1}],
        "fulfilment": {"type": "pickup", "location_id": JINGAN}, "coupon_codes": [coupon["code"]], "points": 0})
    lines = {line["sku_id"]: line for line in order["lines"]}
    assert (lines[TEE_M]["subtotal"], lines[TEE_M]["discount"], lines[TEE_M]["line_total"]) == (9_900, 0, 9_900)
    assert (lines[JEANS_30]["subtotal"], lines[JEANS_30]["discount"], lines[JEANS_30]["line_total"]) == \
        (29_900, 500, 29_400)
    assert order["totals"] == {"subtotal": 39_800, "discount": 500, "points_discount": 0, "total": 39_300}


async def test_the_order_shows_the_points_it_redeemed_and_the_refusal_quotes_the_request(http, api):
    anonymous = Api(http, api)
    admin = await _admin(anonymous)
    member, member_id = await _new_member(anonymous)
    await admin.ok("POST", f"/members/{member_id}/points/adjustments", {"delta": 20_000, "note": "goodwill"})

    # 20,000 points asked for on a 9,900 fen tee: points pay at most half (4,950 fen), at 100 points a yuan
    # that is 4,950 points redeemed.
    order = await member.ok("POST", "/orders", {
        "channel": "app", "lines": [{"sku_id": TEE_M, "qty": 1}],
        "fulfilment": {"type": "pickup", "location_id": JINGAN}, "coupon_codes": [], "points": 20_000})
    assert (order["points"], order["points_requested"]) == (4_950, 20_000)
    assert order["totals"] == {"subtotal": 9_900, "discount": 0, "points_discount": 4_950, "total": 4_950}
    assert (await member.ok("GET", "/members/me/points"))["balance"] == 20_000 - 4_950

    # Another member with 1,000 points asks for 20,000 on the same tee: 4,950 would be usable, 1,000 are there.
    poor, poor_id = await _new_member(anonymous)
    await admin.ok("POST", f"/members/{poor_id}/points/adjustments", {"delta": 1_000, "note": "goodwill"})
    refused = await poor.post("/orders", {
        "channel": "app", "lines": [{"sku_id": TEE_M, "qty": 1}],
        "fulfilment": {"type": "pickup", "location_id": JINGAN}, "coupon_codes": [], "points": 20_000})
    assert refused.status == 409, refused.body
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert "20000 points were asked for" in refused.body["detail"] and "4950" in refused.body["detail"]
    assert "balance is 1000" in refused.body["detail"]
    assert (await poor.ok("GET", "/members/me/points"))["balance"] == 1_000
