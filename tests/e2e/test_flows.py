"""The flows of docs/ARCHITECTURE.md §5 through the gateway only, on the suite as `make run` starts it.

Each flow asserts its effect in every service it touches: stock levels, the order timeline, points and
coupons, the notification log and the settlement journal.
"""
from __future__ import annotations

import pytest

from functools import partial

from tests.support import eventually as _eventually
from tests.e2e.client import (Api, BusTap, level, new_phone, pickup_code_from_notifications, wait_for_status)

TEE_M = "sku_tee_classic_whi_m"
TEE_L = "sku_tee_classic_whi_l"
JEANS_30 = "sku_jeans_slim_ind_30"
JINGAN, XUJIAHUI, LUJIAZUI = "loc_sh_jingan", "loc_sh_xujiahui", "loc_sh_lujiazui"
# Effects in other services follow by events and saga steps; allow for a busy CI machine.
eventually = partial(_eventually, timeout=60)


@pytest.fixture
async def tap(suite):
    tap = await BusTap(suite.bus_namespace).start()
    yield tap
    await tap.stop()


@pytest.fixture
async def anonymous(http, api) -> Api:
    return Api(http, api)


@pytest.fixture
async def admin(anonymous) -> Api:
    return await anonymous.staff_login("hq.admin", "hq-admin-pass")


async def postings(admin: Api, order_id: str, kind: str, count: int = 1) -> list[dict]:
    async def found():
        reply = await admin.get(f"/settlement/orders/{order_id}/postings")
        matching = [p for p in reply.body["items"] if p["kind"] == kind] if reply.status == 200 else []
        return matching if len(matching) >= count else None
    return await eventually(found)


def balanced(posting: dict) -> bool:
    return sum(e["debit"] for e in posting["entries"]) == sum(e["credit"] for e in posting["entries"])


def credits(posting: dict) -> dict[str, int]:
    result: dict[str, int] = {}
    for entry in posting["entries"]:
        result[entry["account"]] = result.get(entry["account"], 0) + entry["credit"] - entry["debit"]
    return result


def statuses(order: dict) -> list[str]:
    """The order's path: timeline statuses with repeats folded (a refused pickup code is noted, not a move)."""
    path: list[str] = []
    for entry in order["timeline"]:
        if not path or path[-1] != entry["status"]:
            path.append(entry["status"])
    return path


async def level_is(admin: Api, location_id: str, sku_id: str, **expected: int) -> dict | None:
    current = await level(admin, location_id, sku_id)
    return current if all(current[k] == v for k, v in expected.items()) else None


async def points_balance(member: Api) -> int:
    reply = await member.get("/members/me/points")
    assert reply.status == 200, reply.body
    return reply.body["balance"]


async def test_acquisition_then_pickup_in_store(anonymous, admin, tap):
    """Flows 5 and 2: a shopper scans an assistant's QR, becomes a member tagged and bound to that store and
    assistant, gets the campaign coupon once, orders for pickup with it, and collects with the code."""
    member = await anonymous.member_login(new_phone())
    scan = await member.ok("POST", "/members/scan", {"code": "qr_staff_jingan_01"})
    assert scan["attribution"]["store_id"] == JINGAN and scan["attribution"]["staff_id"] == "stf_jingan_01"
    assert {"store:loc_sh_jingan", "staff:stf_jingan_01", "campaign:cmp_welcome"} <= set(scan["tags"])
    again = await member.ok("POST", "/members/scan", {"code": "qr_staff_lujiazui_01"})
    assert again["attribution"]["store_id"] == JINGAN  # first touch wins
    coupons = (await member.ok("GET", "/members/me/coupons"))["items"]
    assert [c["template_id"] for c in coupons] == ["cpt_welcome_20"] and coupons[0]["state"] == "issued"

    staff = await anonymous.staff_login("jingan.staff", "jingan-staff-pass")
    before = await level(admin, JINGAN, TEE_M)
    order = await member.ok("POST", "/orders", {
        "channel": "app", "lines": [{"sku_id": TEE_M, "qty": 1}, {"sku_id": JEANS_30, "qty": 1}],
        "fulfilment": {"type": "pickup", "location_id": JINGAN}, "coupon_codes": [coupons[0]["code"]], "points": 0})
    assert order["status"] == "pending_payment"
    assert order["totals"] == {"subtotal": 39800, "discount": 2000, "points_discount": 0, "total": 37800}
    reserved = await level(admin, JINGAN, TEE_M)
    assert reserved["reserved"] == before["reserved"] + 1 and reserved["on_hand"] == before["on_hand"]

    paid = await member.ok("POST", f"/orders/{order['id']}/pay", {"card_number": "4242424242424242"})
    assert paid["status"] == "confirmed"
    await staff.ok("POST", f"/orders/{order['id']}/ready-for-pickup", {})
    code = await pickup_code_from_notifications(member, order["id"])
    wrong = await staff.post(f"/orders/{order['id']}/pickup", {"code": "000000" if code != "000000" else "111111"})
    assert wrong.status in (409, 422) and wrong.headers["Content-Type"].startswith("application/problem+json")
    done = await staff.ok("POST", f"/orders/{order['id']}/pickup", {"code": code})
    assert done["status"] == "completed"
    assert statuses(done) == ["pending_payment", "confirmed", "ready_for_pickup", "picked_up", "completed"]
    after = await eventually(lambda: level_is(admin, JINGAN, TEE_M, on_hand=before["on_hand"] - 1,
                                              reserved=before["reserved"]))
    assert after["available"] == after["on_hand"] - after["reserved"]

    redeemed = (await member.ok("GET", "/members/me/coupons"))["items"]
    assert redeemed[0]["state"] == "redeemed"
    assert await eventually(lambda: points_balance(member)) == 378  # 1 point per yuan paid

    sale = (await postings(admin, order["id"], "sale"))[0]
    assert balanced(sale)
    shares = credits(sale)
    assert shares["staff:stf_jingan_01"] > 0 and shares["store:loc_sh_jingan"] > 0
    assert sum(v for k, v in shares.items() if k != "deferred_revenue") == 37800
    await tap.wait_for("orders.order.completed", order["id"])
    await tap.wait_for("membership.coupon.issued")


async def test_ship_from_store_to_the_closest_store_with_stock_and_capacity(anonymous, admin, tap):
    """Flow 1: routed to the closest location that can serve the whole order; the store ships; the member
    earns points; settlement credits the fulfilling store and the bound assistant."""
    member = await anonymous.member_login(new_phone())
    await member.ok("POST", "/members/scan", {"code": "qr_staff_lujiazui_01"})
    near_xujiahui = {"name": "Wang Fang", "phone": "+8613700000000", "line1": "200 Zhaojiabang Rd",
                     "city": "Shanghai", "lat": 31.1960, "lng": 121.4380}
    order = await member.ok("POST", "/orders", {
        "channel": "mini_program", "lines": [{"sku_id": TEE_L, "qty": 1}],
        "fulfilment": {"type": "ship", "address": near_xujiahui}, "coupon_codes": [], "points": 0})
    assert order["allocations"][0]["location_id"] == XUJIAHUI
    before = await level(admin, XUJIAHUI, TEE_L)
    await member.ok("POST", f"/orders/{order['id']}/pay", {"card_number": "4242424242424242"})
    allocated = await wait_for_status(member, order["id"], "allocated")
    assert allocated["fulfilment"]["location_id"] == XUJIAHUI

    other_store = await anonymous.staff_login("jingan.staff", "jingan-staff-pass")
    assert (await other_store.post(f"/orders/{order['id']}/ship",
                                   {"carrier": "SF", "tracking_number": "SF1"})).status == 404
    staff = await anonymous.staff_login("xujiahui.staff", "xujiahui-staff-pass")
    todo = await staff.ok("GET", f"/orders?store_id={XUJIAHUI}&todo=true")
    assert order["id"] in [o["id"] for o in todo["items"]]
    shipped = await staff.ok("POST", f"/orders/{order['id']}/ship", {"carrier": "SF Express",
                                                                      "tracking_number": "SF1234567890"})
    assert shipped["status"] == "shipped"
    await eventually(lambda: level_is(admin, XUJIAHUI, TEE_L, on_hand=before["on_hand"] - 1))
    completed = await member.ok("POST", f"/orders/{order['id']}/complete", {})
    assert statuses(completed)[-3:] == ["allocated", "shipped", "completed"]
    assert await eventually(lambda: points_balance(member)) == order["totals"]["total"] // 100

    sale = (await postings(admin, order["id"], "sale"))[0]
    assert balanced(sale)
    shares = credits(sale)
    assert shares["store:loc_sh_xujiahui"] > 0        # ship-from-store fee to the fulfilling store
    assert shares["staff:stf_lujiazui_01"] > 0       # commission to the assistant the member is bound to
    shipped_event = await tap.wait_for("orders.order.shipped", order["id"])
    assert shipped_event["data"]["fulfilment"]["location_id"] == XUJIAHUI


async def test_scan_and_pay_in_a_franchise_store(anonymous, admin, tap):
    """Flow 3: the member scans a product code in a store and pays on the phone; stock leaves that store at
    once; the sale is the store's, and the franchisee earns retail minus wholesale."""
    member = await anonymous.member_login(new_phone())
    sku = await anonymous.ok("GET", "/catalog/skus/by-code/6900000001002")
    sku_id = sku.get("id") or sku.get("sku_id")
    before = await level(admin, LUJIAZUI, sku_id)
    # Paying in store needs a store session: the scan token of the store's QR code, scanned there.
    refused = await member.call("POST", "/orders", {
        "channel": "store", "lines": [{"sku_id": sku_id, "qty": 1}],
        "fulfilment": {"type": "in_store", "location_id": LUJIAZUI, "scanned_codes": ["6900000001002"]}})
    assert refused.status == 403 and refused.body["type"].endswith("/not-in-store")
    session = await member.ok("POST", "/members/scan", {"code": "qr_store_lujiazui"})
    order = await member.ok("POST", "/orders", {
        "channel": "store", "lines": [{"sku_id": sku_id, "qty": 1}],
        "fulfilment": {"type": "in_store", "location_id": LUJIAZUI, "scanned_codes": ["6900000001002"]},
        "attribution": {"scan_token": session["scan_token"]}, "coupon_codes": [], "points": 0})
    paid = await member.ok("POST", f"/orders/{order['id']}/pay", {"card_number": "4242424242424242"})
    assert paid["status"] == "completed"
    await eventually(lambda: level_is(admin, LUJIAZUI, sku_id, on_hand=before["on_hand"] - 1,
                                      reserved=before["reserved"]))
    sale = (await postings(admin, order["id"], "sale"))[0]
    assert balanced(sale)
    shares = credits(sale)
    assert shares.get("franchisee:frn_dongfang", 0) > 0
    completed = await tap.wait_for("orders.order.completed", order["id"])
    assert completed["data"]["fulfilment"]["location_id"] == LUJIAZUI


async def test_return_at_another_store_reverses_everything(anonymous, admin, tap):
    """Flow 4: an online order collected at Jing'an is partly returned at Xujiahui: stock goes back to
    Xujiahui, the payment is refunded for the returned line, points are clawed back and settlement posts
    reversing entries for exactly that line."""
    member = await anonymous.member_login(new_phone())
    await member.ok("POST", "/members/scan", {"code": "qr_staff_jingan_01"})
    jingan_staff = await anonymous.staff_login("jingan.staff", "jingan-staff-pass")
    order = await member.ok("POST", "/orders", {
        "channel": "app", "lines": [{"sku_id": TEE_M, "qty": 2}, {"sku_id": JEANS_30, "qty": 1}],
        "fulfilment": {"type": "pickup", "location_id": JINGAN}, "coupon_codes": [], "points": 0})
    await member.ok("POST", f"/orders/{order['id']}/pay", {"card_number": "4242424242424242"})
    await jingan_staff.ok("POST", f"/orders/{order['id']}/ready-for-pickup", {})
    code = await pickup_code_from_notifications(member, order["id"])
    await jingan_staff.ok("POST", f"/orders/{order['id']}/pickup", {"code": code})
    earned = await eventually(lambda: points_balance(member))
    assert earned == order["totals"]["total"] // 100
    sale = (await postings(admin, order["id"], "sale"))[0]

    before_xujiahui = await level(admin, XUJIAHUI, TEE_M)
    returned = await member.ok("POST", f"/orders/{order['id']}/returns",
                               {"lines": [{"sku_id": TEE_M, "qty": 1}], "reason": "too small"})
    return_id = returned["return"]["id"]
    # At another store than the seller: a clerk is refused, the manager takes it with the member's return code.
    xujiahui_staff = await anonymous.staff_login("xujiahui.staff", "xujiahui-staff-pass")
    code = (await member.ok("POST", f"/orders/{order['id']}/return-code", {}))["return_code"]
    refused = await xujiahui_staff.call("POST", f"/orders/{order['id']}/returns/{return_id}/receive",
                                        {"location_id": XUJIAHUI, "proof": {"return_code": code}})
    assert refused.status == 403 and refused.body["type"].endswith("/manager-required")
    xujiahui_manager = await anonymous.staff_login("xujiahui.manager", "xujiahui-manager-pass")
    received = await xujiahui_manager.ok("POST", f"/orders/{order['id']}/returns/{return_id}/receive",
                                         {"location_id": XUJIAHUI, "proof": {"return_code": code}})
    assert received["refunds"] and received["refunds"][-1]["amount"] == 9900
    await eventually(lambda: level_is(admin, XUJIAHUI, TEE_M, on_hand=before_xujiahui["on_hand"] + 1))

    assert await eventually(lambda: _equals(points_balance(member), earned - 99)) is True
    reversal = (await postings(admin, order["id"], "refund"))[0]
    assert balanced(reversal)
    sale_shares, reversed_shares = credits(sale), credits(reversal)
    parties = [k for k in sale_shares if k != "deferred_revenue"]
    assert sum(-reversed_shares.get(k, 0) for k in parties) == 9900  # exactly the returned line's net
    assert 0 < -reversed_shares["staff:stf_jingan_01"] < sale_shares["staff:stf_jingan_01"]
    await tap.wait_for("orders.return.received", order["id"])
    await tap.wait_for("orders.order.refunded", order["id"])


async def _equals(awaitable, expected) -> bool:
    return (await awaitable) == expected


async def test_unpaid_order_cancelled_releases_stock_coupon_and_points(anonymous, admin):
    member = await anonymous.member_login("+8613800000001")  # demo member with 1500 points
    before = await level(admin, JINGAN, JEANS_30)
    start_points = await points_balance(member)
    order = await member.ok("POST", "/orders", {
        "channel": "app", "lines": [{"sku_id": JEANS_30, "qty": 1}],
        "fulfilment": {"type": "pickup", "location_id": JINGAN}, "coupon_codes": [], "points": 500})
    assert order["totals"]["points_discount"] == 500
    assert (await level(admin, JINGAN, JEANS_30))["reserved"] == before["reserved"] + 1
    cancelled = await member.ok("POST", f"/orders/{order['id']}/cancel", {"reason": "changed my mind"})
    assert cancelled["status"] == "cancelled"
    await eventually(lambda: level_is(admin, JINGAN, JEANS_30, reserved=before["reserved"]))
    await eventually(lambda: _equals(points_balance(member), start_points))
    illegal = await member.post(f"/orders/{order['id']}/pay", {"card_number": "4242424242424242"})
    assert illegal.status == 409


async def test_members_and_staff_only_see_their_own(anonymous):
    alice = await anonymous.member_login(new_phone())
    bob = await anonymous.member_login(new_phone())
    order = await alice.ok("POST", "/orders", {
        "channel": "app", "lines": [{"sku_id": TEE_M, "qty": 1}],
        "fulfilment": {"type": "pickup", "location_id": JINGAN}, "coupon_codes": [], "points": 0})
    for method, path, body in (("GET", f"/orders/{order['id']}", None),
                               ("POST", f"/orders/{order['id']}/pay", {"card_number": "4242424242424242"}),
                               ("POST", f"/orders/{order['id']}/cancel", {})):
        reply = await bob.call(method, path, body)
        assert reply.status == 404, (path, reply.body)
    other_store = await anonymous.staff_login("lujiazui.staff", "lujiazui-staff-pass")
    assert (await other_store.get(f"/orders/{order['id']}")).status == 404
    await alice.ok("POST", f"/orders/{order['id']}/cancel", {})
