"""Points, tiers and analytics fed by orders' events over the real broker; redelivery has no second effect."""
from __future__ import annotations

import uuid

from services.membership.usecases import MEMBERS, POINTS, PURCHASES, TIERS
from tests.integration.membership.conftest import bearer, publish, unique_phone
from tests.support import EventTap, eventually


def completed(order_id: str, member_id: str, total: int, category: str = "tees", qty: int = 1) -> dict:
    return {"order_id": order_id, "member_id": member_id, "channel": "app",
            "fulfilment": {"type": "ship", "location_id": "loc_sh_jingan", "ownership": "direct",
                           "franchisee_id": None},
            "lines": [{"sku_id": "sku_tee_classic_whi_s", "product_id": "prd_tee_classic", "category": category,
                       "qty": qty, "unit_price": total // qty, "cost_price": 4200, "line_total": total, "discount": 0}],
            "totals": {"subtotal": total, "discount": 0, "points_discount": 0, "total": total},
            "attribution": {"store_id": "loc_sh_jingan", "staff_id": "stf_jingan_01", "campaign_id": None},
            "payment": {"provider": "fake", "payment_id": "pay_1", "amount": total}}


async def read(membership, fn):
    return await membership.repos.mongo.read_committed(fn)


async def test_completed_order_earns_once_even_when_redelivered_and_refund_claws_back(membership, bus_namespace):
    token, member_id = await membership.member_login(unique_phone())
    oid = f"ord_{uuid.uuid4().hex[:12]}"
    async with EventTap(bus_namespace, "membership.points.changed", "membership.tier.changed") as tap:
        event = await publish(bus_namespace, "orders.order.completed", completed(oid, member_id, 150_000, qty=3))
        # The broker redelivers the very same event (same id): no second effect.
        await publish(bus_namespace, "orders.order.completed", completed(oid, member_id, 150_000, qty=3),
                      envelope_id=event["id"])
        await eventually(lambda: tap.of("membership.points.changed", member_id=member_id, reason="earn"))
        # 1500 yuan at the base tier (x1.0) = 1500 points; it also lifts the member to silver (>= 1000 yuan).
        await eventually(lambda: tap.of("membership.tier.changed", member_id=member_id))
        assert tap.of("membership.tier.changed", member_id=member_id)[0]["data"]["to_tier"] == "silver"

        async def inbox_saw_both():
            return await membership.repos.mongo.db["inbox"].count_documents({"_id": event["id"]}) == 1
        await eventually(inbox_saw_both)
        member = await read(membership, lambda: membership.repos.members.get(member_id))
        assert member["points_balance"] == 1500 == await membership.repos.ledger.sum_for(member_id)
        assert member["tier"] == "silver"

        status, points = await membership.api.get("/members/me/points", headers=bearer(token))
        assert points["balance"] == 1500 and [e["kind"] for e in points["items"]] == ["earn"]
        assert points["items"][0]["expires_at"] is not None

        # Half the order is refunded: half the earned points go back.
        await publish(bus_namespace, "orders.order.refunded", {"order_id": oid, "member_id": member_id,
                                                               "refund": {"amount": 75_000}})
        await eventually(lambda: tap.of("membership.points.changed", member_id=member_id, reason="clawback"))
        member = await read(membership, lambda: membership.repos.members.get(member_id))
        assert member["points_balance"] == 750 == await membership.repos.ledger.sum_for(member_id)
        await eventually(lambda: tap.of("membership.tier.changed", member_id=member_id, to_tier="member"))

    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    status, analytics = await membership.api.get(f"/members/{member_id}/analytics", headers=bearer(admin))
    assert status == 200 and analytics["order_count"] == 1 and analytics["spend"] == 150_000
    assert analytics["average_basket"] == 150_000 and analytics["top_categories"] == [{"category": "tees", "units": 3}]


async def test_paid_order_with_held_points_then_full_refund_returns_spent_points_and_coupon(
        membership, bus_namespace):
    token, member_id = await membership.member_login(unique_phone())
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    await membership.api.post(f"/members/{member_id}/points/adjustments", {"delta": 400, "note": "grant"},
                              headers=bearer(admin))
    _, scan = await membership.api.post("/members/scan", {"code": "qr_campaign_welcome"}, headers=bearer(token))
    code = scan["coupons_issued"][0]["code"]
    service = await membership.service_token()
    oid = f"ord_{uuid.uuid4().hex[:12]}"
    lines = [{"sku_id": "sku_tee_classic_whi_s", "category": "tees", "qty": 2, "unit_price": 15_000}]
    status, hold = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": oid, "member_id": member_id, "channel": "app", "coupon_codes": [code], "points": 400,
        "lines": lines}, headers=bearer(service))
    assert status == 201 and hold["coupon_discount"] == 2000 and hold["points_used"] == 400
    assert (await membership.api.post(f"/members/internal/checkout-holds/{oid}/commit",
                                      headers=bearer(service))).status == 200
    paid = 30_000 - 2000 - 400
    await publish(bus_namespace, "orders.order.completed", completed(oid, member_id, paid))

    async def earned():
        member = await read(membership, lambda: membership.repos.members.get(member_id))
        return member["points_balance"] == paid // 100
    await eventually(earned)

    await publish(bus_namespace, "orders.order.refunded", {"order_id": oid, "member_id": member_id})

    async def reversed_():
        member = await read(membership, lambda: membership.repos.members.get(member_id))
        coupon = await read(membership, lambda: membership.repos.coupons.get(code))
        return member["points_balance"] == 400 and coupon["state"] == "issued"
    await eventually(reversed_)
    assert await membership.repos.ledger.sum_for(member_id) == 400


async def test_dormant_job_and_fifo_expiry(membership, bus_namespace):
    svc = membership.repos
    _, member_id = await membership.member_login(unique_phone())
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    await membership.api.post(f"/members/{member_id}/points/adjustments", {"delta": 300, "note": "old"},
                              headers=bearer(admin))
    service = await membership.service_token()
    # Spend 100 of it: FIFO charges the oldest lot, so only 200 of it can expire.
    status, _ = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": f"ord_{uuid.uuid4().hex[:12]}", "member_id": member_id, "channel": "app", "points": 100,
        "lines": [{"sku_id": "s", "category": "tees", "qty": 1, "unit_price": 50_000}]}, headers=bearer(service))
    assert status == 201
    year_later = (await svc.members.get(member_id))["created_at_ms"] + 366 * 86_400_000
    await membership[POINTS].expire(now=year_later)
    await membership[POINTS].expire(now=year_later)  # idempotent
    member = await svc.members.get(member_id)
    assert member["points_balance"] == 0 == await svc.ledger.sum_for(member_id)
    assert [e["amount"] for e in await svc.ledger.entries(member_id) if e["kind"] == "expire"] == [-200]

    async with EventTap(bus_namespace, "membership.member.dormant") as tap:
        marked = await membership[MEMBERS].mark_dormant(now=year_later)
        assert marked >= 1 and (await svc.members.get(member_id))["dormant"]
        assert await membership[MEMBERS].mark_dormant(now=year_later) == 0
        await eventually(lambda: tap.of("membership.member.dormant", member_id=member_id))


async def test_a_refund_that_overtakes_the_completion_is_applied_when_the_completion_arrives(
        membership, bus_namespace):
    _, member_id = await membership.member_login(unique_phone())
    oid = f"ord_{uuid.uuid4().hex[:12]}"
    await publish(bus_namespace, "orders.order.refunded", {"order_id": oid, "member_id": member_id,
                                                           "refund_amount": 50_000})

    async def tombstone():
        return await read(membership, lambda: membership.repos.purchases.get(oid))
    await eventually(tombstone)
    await publish(bus_namespace, "orders.order.completed", completed(oid, member_id, 100_000))

    async def settled():
        purchase = await read(membership, lambda: membership.repos.purchases.get(oid))
        return purchase.get("amount") == 100_000 and purchase
    purchase = await eventually(settled)
    assert purchase["earned"] == 1000 and purchase["clawed_back"] == 500 and purchase["refunded"] == 50_000
    member = await read(membership, lambda: membership.repos.members.get(member_id))
    assert member["points_balance"] == 500 == await membership.repos.ledger.sum_for(member_id)


async def test_cancelling_a_paid_order_gives_coupon_and_points_back_once(membership, bus_namespace):
    token, member_id = await membership.member_login(unique_phone())
    admin = await membership.staff_token("hq.admin", "hq-admin-pass")
    await membership.api.post(f"/members/{member_id}/points/adjustments", {"delta": 300, "note": "grant"},
                              headers=bearer(admin))
    _, scan = await membership.api.post("/members/scan", {"code": "qr_campaign_welcome"}, headers=bearer(token))
    code = scan["coupons_issued"][0]["code"]
    service = await membership.service_token()
    oid = f"ord_{uuid.uuid4().hex[:12]}"
    lines = [{"sku_id": "sku_tee_classic_whi_s", "category": "tees", "qty": 3, "unit_price": 9_900}]
    status, _ = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": oid, "member_id": member_id, "channel": "app", "coupon_codes": [code], "points": 300,
        "lines": lines}, headers=bearer(service))
    assert status == 201
    assert (await membership.api.post(f"/members/internal/checkout-holds/{oid}/commit",
                                      headers=bearer(service))).status == 200
    assert (await membership.repos.coupons.get(code))["state"] == "redeemed"
    # orders cancels the paid order: release, then its refund event and the cancelled event arrive too
    status, released = await membership.api.post(f"/members/internal/checkout-holds/{oid}/release",
                                                 headers=bearer(service))
    assert status == 200 and released["state"] == "released"
    await publish(bus_namespace, "orders.order.refunded", {"order_id": oid, "member_id": member_id,
                                                           "refund_amount": 29_700 - 2000 - 300,
                                                           "totals": {"total": 29_700 - 2000 - 300}})
    await publish(bus_namespace, "orders.order.cancelled", {"order_id": oid, "member_id": member_id})

    async def both_handled():
        return await membership.repos.mongo.db["inbox"].count_documents({}) >= 2
    await eventually(both_handled)
    member = await read(membership, lambda: membership.repos.members.get(member_id))
    assert member["points_balance"] == 300 == await membership.repos.ledger.sum_for(member_id)
    assert (await membership.repos.coupons.get(code))["state"] == "issued"


async def test_tier_falls_back_when_purchases_age_out_of_the_rolling_year(membership, bus_namespace):
    _, member_id = await membership.member_login(unique_phone())
    oid = f"ord_{uuid.uuid4().hex[:12]}"
    await publish(bus_namespace, "orders.order.completed", completed(oid, member_id, 600_000))

    async def gold():
        return (await read(membership, lambda: membership.repos.members.get(member_id)))["tier"] == "gold"
    await eventually(gold)
    # Age the purchase beyond 12 months (what time would do), then run the nightly job.
    await membership.repos.mongo.transaction(lambda s: membership.repos.purchases.set_fields(
        oid, {"at_ms": 0}, s))
    assert await membership[TIERS].retier_all() >= 1
    assert (await membership.repos.members.get(member_id))["tier"] == "member"


async def test_a_handler_that_fails_half_way_leaves_nothing_and_its_retry_earns_once(membership, bus_namespace):
    svc = membership.repos
    _, member_id = await membership.member_login(unique_phone())
    purchases = membership[PURCHASES]
    real_update_stats = purchases._update_stats
    failures = []

    async def fail_once(*args, **kwargs):
        # Points are already posted in this transaction when this runs: a crash here must undo them.
        if not failures:
            failures.append(1)
            raise RuntimeError("injected failure after the points were posted")
        return await real_update_stats(*args, **kwargs)

    purchases._update_stats = fail_once
    try:
        oid = f"ord_{uuid.uuid4().hex[:12]}"
        await publish(bus_namespace, "orders.order.completed", completed(oid, member_id, 20_000))

        async def earned():
            member = await read(membership, lambda: svc.members.get(member_id))
            return failures and member["points_balance"] == 200
        await eventually(earned)
    finally:
        purchases._update_stats = real_update_stats
    entries = await svc.ledger.entries(member_id)
    assert [e["kind"] for e in entries] == ["earn"] and await svc.ledger.sum_for(member_id) == 200
    assert (await svc.members.stats_of(member_id))["order_count"] == 1
