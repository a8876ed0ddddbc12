"""The order flows against the real stock, catalog and membership services, over real HTTP."""
from __future__ import annotations

import pytest

from tests.integration.orders.test_orders_store_session import store_session
from tests.support import eventually

JINGAN, XUJIAHUI = "loc_sh_jingan", "loc_sh_xujiahui"
TEE = "sku_tee_classic_whi_s"  # app price 9500, base 9900; 6 on hand at Jing'an
LIN = "mbr_demo_lin"


def pickup_order(sku=TEE, qty=1, store=JINGAN, **extra):
    return {"channel": "app", "lines": [{"sku_id": sku, "qty": qty}],
            "fulfilment": {"type": "pickup", "location_id": store}, **extra}


async def test_pickup_flow_reserves_pays_hands_over_and_commits_stock(suite):
    member, staff = suite.mint.member(LIN), suite.mint.staff(JINGAN)
    before = await suite.level(JINGAN, TEE)
    status, order = await suite.place(pickup_order(qty=2), member)
    assert status == 201, order
    assert order["status"] == "pending_payment"
    assert order["totals"] == {"subtotal": 19000, "discount": 0, "points_discount": 0, "total": 19000}
    assert order["fulfilment"]["location_id"] == JINGAN and order["fulfilment"]["ownership"] == "direct"
    held = await suite.level(JINGAN, TEE)
    assert held["available"] == before["available"] - 2

    status, paid = await suite.pay(order["id"], member)
    assert status == 200, paid
    assert paid["status"] == "confirmed" and paid["payment"]["amount"] == 19000

    status, ready = (await suite.call("POST", f"/orders/{order['id']}/ready-for-pickup", staff))[:2]
    assert status == 200, ready
    code = ready["dev_pickup_code"]
    status, done = (await suite.call("POST", f"/orders/{order['id']}/pickup", staff, json={"code": code}))[:2]
    assert status == 200, done
    assert done["status"] == "completed"
    assert [e["status"] for e in done["timeline"] if "event" not in e] == \
        ["pending_payment", "confirmed", "ready_for_pickup", "picked_up", "completed"]

    async def committed():
        reservation = await suite.reservation(order["id"])
        return reservation and reservation["status"] == "committed"
    await eventually(committed)
    after = await suite.level(JINGAN, TEE)
    assert after["on_hand"] == before["on_hand"] - 2


SHANGHAI_HOME = {"line1": "100 Huaihai Rd", "city": "Shanghai", "lat": 31.2200, "lng": 121.4500}


async def test_ship_flow_then_partial_return_at_another_store(suite, bus_namespace, tmp_path):
    from tests.support import EventTap
    member = suite.mint.member(LIN)
    async with EventTap(bus_namespace, "orders.#") as tap:
        status, order = await suite.place({"channel": "app", "lines": [{"sku_id": TEE, "qty": 2},
                                                                       {"sku_id": "sku_jeans_slim_ind_30", "qty": 1}],
                                           "fulfilment": {"type": "ship", "address": SHANGHAI_HOME}}, member)
        assert status == 201, order
        store = order["fulfilment"]["location_id"]
        assert store and order["allocations"]
        status, paid = await suite.pay(order["id"], member)
        assert status == 200 and paid["status"] == "allocated", paid
        assert paid["payment"]["fee"] == (paid["totals"]["total"] * 60 + 5000) // 10000

        # Staff of another store cannot see it (404), staff of the allocated store ships it.
        status, _ = await suite.get(order["id"], suite.mint.staff("loc_sh_wujiaochang"))
        assert status == 404
        status, problem, _ = await suite.call("POST", f"/orders/{order['id']}/ready-for-pickup", suite.mint.staff(store))
        assert status == 409 and problem["type"].endswith("illegal-transition")
        status, shipped, _ = await suite.call("POST", f"/orders/{order['id']}/ship", suite.mint.staff(store),
                                              json={"carrier": "SF Express", "tracking_number": "SF1234567890"})
        assert status == 200 and shipped["status"] == "shipped"
        status, problem, _ = await suite.call("POST", f"/orders/{order['id']}/cancel", member)
        assert status == 409, problem  # too late to cancel once shipped
        status, done, _ = await suite.call("POST", f"/orders/{order['id']}/complete", member)
        assert status == 200 and done["status"] == "completed"

        # Return one tee at Xujiahui (any store takes returns: another store's, by its manager, with the
        # return code the member's app shows).
        xujiahui_staff = suite.mint.staff(XUJIAHUI, role="store_manager")
        before = await suite.level(XUJIAHUI, TEE)
        status, answer, _ = await suite.call("POST", f"/orders/{order['id']}/returns", member,
                                             json={"lines": [{"sku_id": TEE, "qty": 1}], "reason": "too small"})
        assert status == 201, answer
        ret = answer["return"]
        tee_line = next(l for l in done["lines"] if l["sku_id"] == TEE)
        assert ret["refund_amount"] == tee_line["line_total"] // 2
        status, code, _ = await suite.call("POST", f"/orders/{order['id']}/return-code", member)
        assert status == 200, code
        status, received, _ = await suite.call("POST", f"/orders/{order['id']}/returns/{ret['id']}/receive",
                                               xujiahui_staff, json={"location_id": XUJIAHUI,
                                                                     "proof": {"return_code": code["return_code"]}})
        assert status == 200, received
        assert received["status"] == "completed"  # partial: the jeans and one tee are kept

        async def back_in_stock():
            return (await suite.level(XUJIAHUI, TEE))["on_hand"] == before["on_hand"] + 1
        await eventually(back_in_stock)
        await eventually(lambda: tap.of("orders.order.refunded", order_id=order["id"]))

        refunded = tap.of("orders.order.refunded", order_id=order["id"])[0]["data"]
        assert refunded["refund_amount"] == ret["refund_amount"] and refunded["return_id"] == ret["id"]
        assert refunded["return_lines"][0]["qty"] == 1
        for event_type in ("orders.order.placed", "orders.order.confirmed", "orders.order.allocated",
                           "orders.order.shipped", "orders.order.completed", "orders.return.requested",
                           "orders.return.received"):
            await eventually(lambda: tap.of(event_type, order_id=order["id"]))
        confirmed = tap.of("orders.order.confirmed", order_id=order["id"])[0]["data"]
        assert confirmed["payment"]["provider"] == "sandbox" and confirmed["payment"]["amount"] == paid["totals"]["total"]
        assert confirmed["fulfilment"]["location_id"] == store and confirmed["fulfilment"]["ownership"] in ("direct", "franchise")
        assert confirmed["attribution"]["store_id"] == JINGAN  # Lin is bound to Jing'an's assistant
        assert confirmed["attribution"]["staff_id"] == "stf_jingan_01"
        assert all(line["cost_price"] > 0 and line["line_total"] > 0 for line in confirmed["lines"])
        assert tap.of("orders.order.shipped", order_id=order["id"])[0]["data"]["tracking_number"] == "SF1234567890"
        assert_events_match_the_asyncapi_contract(tap.events, tmp_path)


def assert_events_match_the_asyncapi_contract(events: list[dict], tmp_path) -> None:
    """Every event orders published validates against the AsyncAPI document generated from the models."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
    import asyncapi
    document = tmp_path / "asyncapi.yaml"
    document.write_text(asyncapi.render(asyncapi.build_document()))
    assert events
    for envelope in events:
        asyncapi.validate_event(envelope, document)


async def test_in_store_guest_sale_by_staff_completes_at_once_and_commits_stock(suite):
    staff = suite.mint.staff(XUJIAHUI, staff_id="stf_xujiahui_01")
    before = await suite.level(XUJIAHUI, TEE)
    status, order = await suite.place({"channel": "store", "lines": [{"sku_id": TEE, "qty": 1}],
                                       "fulfilment": {"type": "in_store", "location_id": XUJIAHUI}}, staff)
    assert status == 201, order
    assert order["member_id"] is None and order["totals"]["total"] == 9900  # store channel price
    assert order["attribution"]["store_id"] == XUJIAHUI and order["attribution"]["staff_id"] == "stf_xujiahui_01"
    status, paid = await suite.pay(order["id"], staff)
    assert status == 200 and paid["status"] == "completed", paid

    async def sold():
        return (await suite.level(XUJIAHUI, TEE))["on_hand"] == before["on_hand"] - 1
    await eventually(sold)
    # Staff of another store cannot ring up a sale here.
    status, problem = await suite.place({"channel": "store", "lines": [{"sku_id": TEE, "qty": 1}],
                                         "fulfilment": {"type": "in_store", "location_id": XUJIAHUI}},
                                        suite.mint.staff(JINGAN))
    assert status == 403


async def test_member_scan_and_pay_in_store(suite):
    """The member scans the store's QR code, then two tees' barcodes in the store, and pays on the phone."""
    member = suite.mint.member(LIN)
    session = await store_session(suite, member, "qr_store_xujiahui")
    status, problem = await suite.place({"channel": "store", "attribution": session, "fulfilment": {
        "type": "in_store", "location_id": XUJIAHUI, "scanned_codes": ["6900000009999"]}}, member)
    assert status == 422 and problem["type"].endswith("unknown-code"), problem
    status, order = await suite.place({"channel": "store", "attribution": session, "fulfilment": {
        "type": "in_store", "location_id": XUJIAHUI, "scanned_codes": ["6900000001001", "6900000001001"]}}, member)
    assert status == 201, order
    assert [(l["sku_id"], l["qty"]) for l in order["lines"]] == [(TEE, 2)]
    # Sold in Xujiahui: the sale is that store's, not the bound store's assistant's.
    assert order["attribution"]["store_id"] == XUJIAHUI and order["attribution"]["staff_id"] is None
    status, paid = await suite.pay(order["id"], member)
    assert status == 200 and paid["status"] == "completed"
    assert [e["status"] for e in paid["timeline"]] == ["pending_payment", "confirmed", "completed"]


async def test_cancelling_a_paid_pickup_refunds_and_releases_everything(suite, bus_namespace):
    from tests.support import EventTap
    member = suite.mint.member(LIN)
    before = await suite.level(JINGAN, TEE)
    async with EventTap(bus_namespace, "orders.order.*") as tap:
        status, order = await suite.place(pickup_order(), member)
        assert status == 201
        status, paid = await suite.pay(order["id"], member)
        assert status == 200
        status, cancelled, _ = await suite.call("POST", f"/orders/{order['id']}/cancel", member,
                                                json={"reason": "changed my mind"})
        assert status == 200 and cancelled["status"] == "cancelled"
        status, problem, _ = await suite.call("POST", f"/orders/{order['id']}/cancel", member)
        assert status == 409 and problem["type"].endswith("illegal-transition")

        async def released():
            level = await suite.level(JINGAN, TEE)
            return level["available"] == before["available"] and level["reserved"] == before["reserved"]
        await eventually(released)
        await eventually(lambda: tap.of("orders.order.refunded", order_id=order["id"]))
        assert tap.of("orders.order.refunded", order_id=order["id"])[0]["data"]["refund_amount"] == paid["totals"]["total"]
        assert tap.of("orders.order.cancelled", order_id=order["id"])[0]["data"]["refund_amount"] == paid["totals"]["total"]
        status, final = await suite.get(order["id"], member)
        assert final["refunds"][0]["state"] == "done"


async def issue_welcome_coupon(suite, member_id: str) -> str:
    status, coupon, _ = await suite.call("POST", f"/members/{member_id}/coupons", suite.mint.admin(),
                                         service="membership", json={"template_id": "cpt_welcome_20"})
    assert status == 201, coupon
    return coupon["code"]


async def coupon_state(suite, member_id: str, code: str) -> str:
    status, page, _ = await suite.call("GET", f"/members/{member_id}/coupons", suite.mint.admin(), service="membership")
    assert status == 200, page
    return next(c["state"] for c in page["items"] if c["code"] == code)


async def test_coupon_and_points_are_held_spread_over_lines_and_given_back_on_cancel(suite):
    member = suite.mint.member(LIN)
    code = await issue_welcome_coupon(suite, LIN)
    status, order = await suite.place({"channel": "app", "lines": [{"sku_id": TEE, "qty": 1},
                                                                   {"sku_id": "sku_jeans_slim_ind_30", "qty": 1}],
                                       "fulfilment": {"type": "pickup", "location_id": JINGAN},
                                       "coupon_codes": [code], "points": 1001}, member)
    assert status == 201, order
    totals = order["totals"]
    assert totals["discount"] == 2000 and totals["points_discount"] == 1001
    assert totals["total"] == totals["subtotal"] - 3001
    assert sum(l["discount"] for l in order["lines"]) == 2000
    assert sum(l["points_discount"] for l in order["lines"]) == 1001
    assert sum(l["line_total"] for l in order["lines"]) == totals["total"]
    assert await coupon_state(suite, LIN, code) == "locked"
    # The coupon is locked by this order: a second order cannot use it, and its stock is given back.
    level = await suite.level(JINGAN, TEE)
    status, problem = await suite.place({"channel": "app", "lines": [{"sku_id": TEE, "qty": 3}],
                                         "fulfilment": {"type": "pickup", "location_id": JINGAN},
                                         "coupon_codes": [code]}, member)
    assert status == 409 and problem["type"].endswith("coupon-unavailable"), problem

    async def compensated():
        return (await suite.level(JINGAN, TEE))["available"] == level["available"]
    await eventually(compensated)
    status, cancelled, _ = await suite.call("POST", f"/orders/{order['id']}/cancel", member)
    assert status == 200

    async def coupon_back():
        return await coupon_state(suite, LIN, code) == "issued"
    await eventually(coupon_back)


async def test_paid_pickup_redeems_the_coupon_and_earns_points(suite):
    member = suite.mint.member(LIN)
    code = await issue_welcome_coupon(suite, LIN)
    status, order = await suite.place({"channel": "app", "lines": [{"sku_id": "sku_jeans_slim_ind_30", "qty": 1}],
                                       "fulfilment": {"type": "pickup", "location_id": JINGAN},
                                       "coupon_codes": [code]}, member)
    assert status == 201, order
    status, me, _ = await suite.call("GET", "/members/me/points", member, service="membership")
    points_before = me["balance"]
    assert (await suite.pay(order["id"], member))[0] == 200

    async def redeemed():
        return await coupon_state(suite, LIN, code) == "redeemed"
    await eventually(redeemed)
    staff = suite.mint.staff(JINGAN)
    _, ready, _ = await suite.call("POST", f"/orders/{order['id']}/ready-for-pickup", staff)
    status, done, _ = await suite.call("POST", f"/orders/{order['id']}/pickup", staff,
                                       json={"code": ready["dev_pickup_code"]})
    assert status == 200 and done["status"] == "completed"

    async def earned():
        _, now, _ = await suite.call("GET", "/members/me/points", member, service="membership")
        return now["balance"] > points_before
    await eventually(earned)


async def test_sold_out_says_sold_out_and_nothing_about_other_stores_or_counts(suite):
    """Stock's refusal names the stores that still have the SKU and how far they are; the buyer's answer
    must not map a brand's stock and routing for whoever asks. Also when it comes from memory."""
    member = suite.mint.member(LIN)
    for _ in range(2):  # stock's answer, then the sold-out memo's
        status, problem = await suite.place(pickup_order(sku="sku_tee_limited_red_m", qty=50), member)
        assert status == 409 and problem["type"].endswith("sold-out")
        assert set(problem) <= {"type", "title", "status", "detail", "instance", "request_id"}, problem
        assert "loc_" not in problem["detail"] and "50" not in problem["detail"]


async def test_a_known_sold_out_refusal_claims_no_key_and_writes_nothing(suite, monkeypatch):
    """Right after stock said sold-out, the same demand is refused from memory before the Idempotency-Key is
    claimed or any checkout is recorded: a flash sale's losers cost no transaction."""
    from libs.idempotency import IdempotencyGuard
    from services.orders.usecases import CHECKOUT
    claims = []
    real_begin = IdempotencyGuard.begin

    async def spied_begin(guard):
        claims.append(guard.key)
        return await real_begin(guard)

    monkeypatch.setattr(IdempotencyGuard, "begin", spied_begin)
    member = suite.mint.member(LIN)
    demand = pickup_order(sku="sku_tee_limited_red_m", qty=50)
    status, problem = await suite.place(demand, member)
    assert status == 409 and problem["type"].endswith("sold-out")
    mongo = suite.apps["orders"][CHECKOUT].mongo
    orders_before = await mongo.db["orders"].count_documents({})
    keys_before = await mongo.db["idempotency"].count_documents({})
    status, again = await suite.place(demand, member, key="sold-out-retry")
    assert status == 409 and again["type"].endswith("sold-out")
    assert "sold-out-retry" not in claims  # refused before the key was claimed
    assert await mongo.db["orders"].count_documents({}) == orders_before
    assert await mongo.db["idempotency"].count_documents({}) == keys_before


async def test_members_see_only_their_own_orders(suite):
    lin, chen = suite.mint.member(LIN), suite.mint.member("mbr_demo_chen")
    status, order = await suite.place(pickup_order(), lin)
    assert status == 201
    for headers in (chen, suite.mint.staff(XUJIAHUI)):
        status, problem = await suite.get(order["id"], headers)
        assert status == 404 and problem["type"].endswith("not-found")
        status, problem = await suite.pay(order["id"], headers)
        assert status == 404
        status, _, _ = await suite.call("POST", f"/orders/{order['id']}/cancel", headers)
        assert status == 404
    status, page, _ = await suite.call("GET", "/orders", chen)
    assert status == 200 and page["items"] == []
    status, mine = await suite.get(order["id"], lin)
    assert status == 200 and mine["id"] == order["id"]


async def test_store_view_lists_the_orders_a_store_must_hand_over(suite):
    member, staff = suite.mint.member(LIN), suite.mint.staff(JINGAN)
    ids = []
    for _ in range(3):
        status, order = await suite.place(pickup_order(), member)
        assert status == 201
        assert (await suite.pay(order["id"], member))[0] == 200
        ids.append(order["id"])
    status, page, _ = await suite.call("GET", f"/orders?store_id={JINGAN}&todo=true&limit=2", staff)
    assert status == 200 and len(page["items"]) == 2 and page["next_cursor"]
    status, rest, _ = await suite.call("GET", f"/orders?store_id={JINGAN}&todo=true&limit=2&cursor={page['next_cursor']}",
                                       staff)
    assert [o["id"] for o in page["items"] + rest["items"]] == list(reversed(ids))
    status, problem, _ = await suite.call("GET", f"/orders?store_id={JINGAN}", suite.mint.staff(XUJIAHUI))
    assert status == 403


async def test_declined_and_timed_out_payments_then_a_signed_callback(suite):
    import json as jsonlib
    from services.orders.payments.port import SIGNATURE_HEADER, sign
    member = suite.mint.member(LIN)
    status, order = await suite.place(pickup_order(), member)
    status, problem = await suite.pay(order["id"], member, card="4000000000000002")
    assert status == 402 and problem["type"].endswith("payment-declined")
    status, pending = await suite.pay(order["id"], member, card="4000000000000119")
    assert status == 202 and pending["status"] == "pending_payment"
    assert pending["payment_attempt"]["state"] == "unknown"
    status, problem = await suite.pay(order["id"], member)  # no second charge while the first is unknown
    assert status == 409 and problem["type"].endswith("payment-in-progress")

    orders_app = suite.apps["orders"]
    from services.orders.usecases import ORDERS
    stored = await orders_app[ORDERS].repo.get_committed(order["id"])
    callback = {"order_id": order["id"], "attempt_id": stored["payment_attempt"]["id"], "status": "succeeded",
                "payment_id": "pay_sbx_late_1", "amount": order["totals"]["total"], "fee": 57}
    raw = jsonlib.dumps(callback).encode()
    status, problem, _ = await suite.call("POST", "/orders/payments/callback",
                                          {SIGNATURE_HEADER: "sha256=" + "0" * 64, "Content-Type": "application/json"},
                                          data=raw)
    assert status == 401 and problem["type"].endswith("invalid-signature")
    secret = orders_app[ORDERS].settings.payment_webhook_secret
    for _ in range(2):  # a provider retries callbacks; the second one changes nothing
        status, confirmed, _ = await suite.call("POST", "/orders/payments/callback",
                                                {SIGNATURE_HEADER: sign(secret, raw), "Content-Type": "application/json"},
                                                data=raw)
        assert status == 200 and confirmed["status"] == "confirmed", confirmed
        assert confirmed["payment"]["payment_id"] == "pay_sbx_late_1"
    assert [e["status"] for e in confirmed["timeline"] if "event" not in e].count("confirmed") == 1


async def test_bad_requests_get_clear_problems_and_change_nothing(suite):
    member = suite.mint.member(LIN)
    before = await suite.level(JINGAN, TEE)
    cases = [
        ({"channel": "app", "lines": [], "fulfilment": {"type": "pickup", "location_id": JINGAN}}, 422),
        ({"channel": "app", "lines": [{"sku_id": TEE, "qty": 0}], "fulfilment": {"type": "pickup", "location_id": JINGAN}}, 422),
        ({"channel": "tv", "lines": [{"sku_id": TEE, "qty": 1}], "fulfilment": {"type": "pickup", "location_id": JINGAN}}, 422),
        ({"channel": "app", "lines": [{"sku_id": TEE, "qty": 1}], "fulfilment": {"type": "ship"}}, 422),
        ({"channel": "app", "lines": [{"sku_id": TEE, "qty": 1}], "fulfilment": {"type": "in_store", "location_id": JINGAN}}, 422),
        ({"channel": "app", "lines": [{"sku_id": "sku_nope", "qty": 1}], "fulfilment": {"type": "pickup", "location_id": JINGAN}}, 422),
        ({"channel": "app", "lines": [{"sku_id": TEE, "qty": 1}], "fulfilment": {"type": "pickup", "location_id": "loc_nowhere"}}, 422),
        ({"channel": "app", "lines": [{"sku_id": TEE, "qty": 1}], "fulfilment": {"type": "pickup", "location_id": JINGAN}, "points": -5}, 422),
    ]
    for body, expected in cases:
        status, problem = await suite.place(body, member)
        assert status == expected, (body, status, problem)
        assert problem["status"] == expected and problem["type"].startswith("https://o2o.example/problems/")
    status, problem, headers = await suite.call("POST", "/orders", {**member, "Content-Type": "application/json"},
                                                data=b"{not json")
    assert status == 400 and headers["Content-Type"].startswith("application/problem+json")
    status, problem, _ = await suite.call("POST", "/orders", {}, json=pickup_order())
    assert status == 401
    status, problem = await suite.pay("ord_doesnotexist", member)
    assert status == 404
    status, problem, _ = await suite.call("POST", "/orders/ord_x/pay", member, json={"card_number": "abc"})
    assert status == 422
    assert (await suite.level(JINGAN, TEE))["available"] == before["available"]
    status, page, _ = await suite.call("GET", "/orders", member)
    assert page["items"] == []


@pytest.mark.parametrize("suite", [{"payment_attempt_timeout_s": 1}], indirect=True)
async def test_a_charge_whose_answer_died_with_the_process_is_found_not_repeated(suite):
    """The process died after the provider charged but before the order recorded it: paying again asks
    the provider about the stale attempt and confirms with that charge instead of charging twice."""
    from datetime import UTC, datetime, timedelta
    from services.orders.usecases import ORDERS, PAYMENT_PROVIDER
    from libs.clock import rfc3339
    member = suite.mint.member(LIN)
    status, order = await suite.place(pickup_order(), member)
    assert status == 201
    service, provider = suite.apps["orders"][ORDERS], suite.apps["orders"][PAYMENT_PROVIDER]
    charged = await provider.charge(order_id=order["id"], attempt_id="pat_died_mid_charge",
                                    amount=order["totals"]["total"], card_number="4242424242424242")

    async def died_mid_charge(session):
        doc = await service.repo.get(order["id"], session)
        doc["payment_attempt"] = {"id": "pat_died_mid_charge", "state": "charging",
                                  "started_at": rfc3339(datetime.now(UTC) - timedelta(seconds=5))}
        await service.repo.save(doc, session)
    await service.mongo.transaction(died_mid_charge)

    status, paid = await suite.pay(order["id"], member)
    assert status == 200, paid
    assert paid["status"] == "confirmed" and paid["payment"]["payment_id"] == charged.payment_id


async def test_the_members_own_scan_token_wins_over_the_binding_and_nothing_else_does(suite):
    """Lin is bound to Jing'an's assistant, but scanned the Lujiazui assistant's QR code before ordering: the
    scan token membership gave her credits Lujiazui. A poster's QR code named at checkout, another member's
    token or a made-up one move nothing."""
    member = suite.mint.member(LIN)
    status, problem = await suite.place(pickup_order(attribution={"code": "qr_staff_lujiazui_01"}), member)
    assert status == 422  # a QR code is not named at checkout: anyone can read one off a poster
    status, scan, _ = await suite.call("POST", "/members/scan", member, service="membership",
                                       json={"code": "qr_staff_lujiazui_01"})
    assert status == 200 and scan["scan_token"], scan
    status, order = await suite.place(pickup_order(attribution={"scan_token": scan["scan_token"]}), member)
    assert status == 201, order
    assert order["attribution"] == {"store_id": "loc_sh_lujiazui", "staff_id": "stf_lujiazui_01",
                                    "campaign_id": "cmp_welcome", "code": "qr_staff_lujiazui_01"}
    status, order = await suite.place(pickup_order(attribution={"scan_token": "made-up-token-0123456789"}), member)
    assert status == 201 and order["attribution"]["staff_id"] == "stf_jingan_01"  # the binding, then
    other = suite.mint.member("mbr_unbound_shopper")
    status, order = await suite.place(pickup_order(attribution={"scan_token": scan["scan_token"]}), other)
    assert status == 201 and order["attribution"]["staff_id"] is None  # Lin's token is not theirs
    status, problem = await suite.place(pickup_order(attribution={"staff_id": "stf_my_friend"}), member)
    assert status == 422  # nobody names an assistant to credit by hand


async def test_a_commit_overtaken_by_a_release_resolves_instead_of_failing_forever(suite):
    """Membership released the order's hold first (a compensation that overtook the payment): the commit
    after payment gets a final 409 `hold-released`. The follow-up is settled, not retried on every sweep."""

    from services.orders.metrics import SAGA_ACTIONS
    from services.orders.usecases import ORDERS
    member = suite.mint.member(LIN)
    status, order = await suite.place({"channel": "app", "lines": [{"sku_id": TEE, "qty": 1}],
                                       "fulfilment": {"type": "pickup", "location_id": JINGAN}, "points": 100}, member)
    assert status == 201, order
    status, released, _ = await suite.call("POST", f"/members/internal/checkout-holds/{order['id']}/release",
                                           suite.mint.service("orders", "membership"), service="membership")
    assert status == 200, released
    overtaken = SAGA_ACTIONS.labels("benefits.commit", "overtaken")
    before = overtaken._value.get()
    status, paid = await suite.pay(order["id"], member)
    assert status == 200 and paid["status"] == "confirmed"
    orders = suite.apps["orders"][ORDERS].mongo.db["orders"]

    async def settled():
        doc = await orders.find_one({"_id": order["id"]})
        return not [a for a in doc.get("pending_actions", []) if a.startswith("benefits.commit")]
    await eventually(settled, timeout=20)
    assert overtaken._value.get() == before + 1
