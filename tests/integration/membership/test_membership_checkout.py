"""Concurrent redemptions never overspend points (balance = ledger sum); two orders
racing for one coupon: exactly one wins, and cancelling releases it."""
from __future__ import annotations

import asyncio
import uuid

from tests.integration.membership.conftest import bearer, publish, unique_phone
from tests.support import eventually

LINES = [{"sku_id": "sku_tee_classic_whi_s", "category": "tees", "qty": 2, "unit_price": 25_000}]


def order_id() -> str:
    return f"ord_{uuid.uuid4().hex[:16]}"


async def ledger_sum(membership, member_id: str) -> int:
    return await membership.repos.ledger.sum_for(member_id)


async def test_100_concurrent_redemptions_against_a_balance_covering_10(membership):
    _, member_id = await membership.member_login(unique_phone())
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    status, adjusted = await membership.api.post(f"/members/{member_id}/points/adjustments",
                                                 {"delta": 1000, "note": "test grant"}, headers=bearer(admin))
    assert status == 201 and adjusted["balance"] == 1000
    service = await membership.service_token()

    answers = await asyncio.gather(*[membership.api.post("/members/internal/checkout-holds", {
        "order_id": order_id(), "member_id": member_id, "channel": "app", "points": 100, "lines": LINES},
        headers=bearer(service)) for _ in range(100)])

    won = [body for status, body in answers if status == 201]
    lost = [body for status, body in answers if status != 201]
    assert len(won) == 10
    assert all(body["points_used"] == 100 and body["points_discount"] == 100 for body in won)
    assert all(body["status"] == 409 and body["type"].endswith("insufficient-points") for body in lost)
    member = await membership.repos.members.get(member_id)
    assert member["points_balance"] == 0 == await ledger_sum(membership, member_id)
    entries = await membership.repos.ledger.entries(member_id)
    assert sorted(e["amount"] for e in entries if e["kind"] == "hold") == [-100] * 10


async def test_a_hold_is_idempotent_by_order_and_its_release_gives_points_back(membership):
    _, member_id = await membership.member_login(unique_phone())
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    await membership.api.post(f"/members/{member_id}/points/adjustments", {"delta": 500, "note": "grant"},
                              headers=bearer(admin))
    service = await membership.service_token()
    oid = order_id()
    request = {"order_id": oid, "member_id": member_id, "channel": "store", "points": 10_000, "lines": LINES}
    status, first = await membership.api.post("/members/internal/checkout-holds", request, headers=bearer(service))
    # capped: 500 points is all there is, far below 50 % of the order
    assert status == 409 and first["type"].endswith("insufficient-points")
    request["points"] = 300
    status, first = await membership.api.post("/members/internal/checkout-holds", request, headers=bearer(service))
    status2, again = await membership.api.post("/members/internal/checkout-holds", request, headers=bearer(service))
    assert status == 201 and status2 == 201 and first == again and first["points_used"] == 300
    assert (await membership.repos.members.get(member_id))["points_balance"] == 200

    status, released = await membership.api.post(f"/members/internal/checkout-holds/{oid}/release",
                                                 headers=bearer(service))
    assert status == 200 and released["state"] == "released"
    status, _ = await membership.api.post(f"/members/internal/checkout-holds/{oid}/release", headers=bearer(service))
    assert status == 200  # idempotent
    status, problem = await membership.api.post(f"/members/internal/checkout-holds/{oid}/commit",
                                                headers=bearer(service))
    assert status == 409 and problem["type"].endswith("hold-released")
    balance = (await membership.repos.members.get(member_id))["points_balance"]
    assert balance == 500 == await ledger_sum(membership, member_id)


async def test_two_orders_racing_for_one_coupon_exactly_one_wins_and_cancel_releases_it(membership, bus_namespace):
    token, member_id = await membership.member_login(unique_phone())
    status, scanned = await membership.api.post("/members/scan", {"code": "qr_campaign_welcome"}, headers=bearer(token))
    code = scanned["coupons_issued"][0]["code"]
    service = await membership.service_token()
    orders = [order_id() for _ in range(2)]

    answers = await asyncio.gather(*[membership.api.post("/members/internal/checkout-holds", {
        "order_id": oid, "member_id": member_id, "channel": "app", "coupon_codes": [code], "lines": LINES},
        headers=bearer(service)) for oid in orders])
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201, 409]
    winner = next(oid for oid, (status, _) in zip(orders, answers) if status == 201)
    loser = next(oid for oid in orders if oid != winner)
    won = next(body for status, body in answers if status == 201)
    assert won["coupon_discount"] == 2000
    assert won["coupons"] == [{"code": code, "discount": 2000, "sku_ids": [line["sku_id"] for line in LINES]}]
    lost = next(body for status, body in answers if status == 409)
    assert lost["type"].endswith("coupon-unavailable")
    assert (await membership.repos.coupons.get(code))["state"] == "locked"

    # The winner's order is cancelled (orders publishes it; membership's safety net releases the hold).
    await publish(bus_namespace, "orders.order.cancelled", {"order_id": winner, "member_id": member_id})
    await eventually(lambda: _coupon_state(membership, code, "issued"))
    status, coupons = await membership.api.get("/members/me/coupons", headers=bearer(token))
    assert [c["state"] for c in coupons["items"]] == ["issued"]

    # Now the other order can take it, and paying redeems it for good.
    status, body = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": loser, "member_id": member_id, "channel": "app", "coupon_codes": [code], "lines": LINES},
        headers=bearer(service))
    assert status == 201, body
    status, _ = await membership.api.post(f"/members/internal/checkout-holds/{loser}/commit", headers=bearer(service))
    assert status == 200 and (await membership.repos.coupons.get(code))["state"] == "redeemed"
    status, problem = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": order_id(), "member_id": member_id, "channel": "app", "coupon_codes": [code], "lines": LINES},
        headers=bearer(service))
    assert status == 409 and problem["type"].endswith("coupon-unavailable")


async def _coupon_state(membership, code: str, state: str) -> bool:
    coupon = await membership.repos.mongo.read_committed(lambda: membership.repos.coupons.get(code))
    return coupon["state"] == state


async def test_coupon_rules_refuse_cleanly(membership):
    token, member_id = await membership.member_login(unique_phone())
    _, scanned = await membership.api.post("/members/scan", {"code": "qr_campaign_welcome"}, headers=bearer(token))
    code = scanned["coupons_issued"][0]["code"]
    service = await membership.service_token()
    small = [{"sku_id": "sku_tee_classic_whi_s", "category": "tees", "qty": 1, "unit_price": 9900}]
    status, problem = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": order_id(), "member_id": member_id, "channel": "app", "coupon_codes": [code], "lines": small},
        headers=bearer(service))
    assert status == 422 and problem["type"].endswith("coupon-not-applicable")
    _, other = await membership.member_login(unique_phone())
    status, problem = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": order_id(), "member_id": other, "channel": "app", "coupon_codes": [code], "lines": LINES},
        headers=bearer(service))
    assert status == 409 and problem["type"].endswith("coupon-unavailable")
    status, problem = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": order_id(), "member_id": member_id, "channel": "app", "lines": []}, headers=bearer(service))
    assert status == 422
    status, problem = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": order_id(), "member_id": member_id, "channel": "app", "lines": LINES}, headers=bearer(token))
    assert status == 403
    assert (await membership.repos.coupons.get(code))["state"] == "issued"


async def test_an_expired_coupon_cannot_be_used_and_the_sweeper_marks_it(membership):
    from services.membership import jobs
    token, member_id = await membership.member_login(unique_phone())
    _, scanned = await membership.api.post("/members/scan", {"code": "qr_campaign_welcome"}, headers=bearer(token))
    code = scanned["coupons_issued"][0]["code"]
    svc = membership.repos
    await svc.mongo.transaction(lambda s: svc.coupons.collection.update_one(
        {"_id": code}, {"$set": {"valid_until_ms": 1}}, session=s))
    status, coupons = await membership.api.get("/members/me/coupons", headers=bearer(token))
    assert [c["state"] for c in coupons["items"]] == ["expired"]
    service = await membership.service_token()
    status, problem = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": order_id(), "member_id": member_id, "channel": "app", "coupon_codes": [code], "lines": LINES},
        headers=bearer(service))
    assert status == 409 and problem["type"].endswith("coupon-unavailable")
    await jobs.expire_coupons(membership.app)
    assert (await svc.coupons.get(code))["state"] == "expired"
