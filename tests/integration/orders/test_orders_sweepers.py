"""Timers of the order lifecycle, run by the service's own sweeper job with short settings."""
from __future__ import annotations

import asyncio

import pytest

from tests.support import eventually
from services.orders.usecases import ORDERS

JINGAN, TEE, LIN = "loc_sh_jingan", "sku_tee_classic_whi_s", "mbr_demo_lin"
PICKUP = {"channel": "app", "lines": [{"sku_id": TEE, "qty": 1}], "fulfilment": {"type": "pickup", "location_id": JINGAN}}


async def status_of(suite, order_id):
    return (await suite.get(order_id, suite.mint.admin()))[1]["status"]


@pytest.mark.parametrize("suite", [{"payment_window_s": 1}], indirect=True)
async def test_an_unpaid_order_expires_and_its_stock_is_released(suite):
    member = suite.mint.member(LIN)
    before = await suite.level(JINGAN, TEE)
    status, order = await suite.place(PICKUP, member)
    assert status == 201

    async def cancelled():
        return await status_of(suite, order["id"]) == "cancelled"
    await eventually(cancelled, timeout=20)

    async def released():
        return (await suite.level(JINGAN, TEE))["available"] == before["available"]
    await eventually(released)
    status, late = await suite.pay(order["id"], member)
    assert status == 409
    _, final = await suite.get(order["id"], member)
    assert final["timeline"][-1]["actor"] == "system:expired"


@pytest.mark.parametrize("suite", [{"uncollected_after_s": 1}], indirect=True)
async def test_an_uncollected_pickup_is_cancelled_refunded_and_released(suite):
    member = suite.mint.member(LIN)
    before = await suite.level(JINGAN, TEE)
    status, order = await suite.place(PICKUP, member)
    assert (await suite.pay(order["id"], member))[0] == 200
    status, _, _ = await suite.call("POST", f"/orders/{order['id']}/ready-for-pickup", suite.mint.staff(JINGAN))
    assert status == 200

    async def refunded():
        _, now = await suite.get(order["id"], member)
        return now["status"] == "cancelled" and now["refunds"] and now["refunds"][0]["state"] == "done"
    await eventually(refunded, timeout=20)

    async def released():
        return (await suite.level(JINGAN, TEE))["available"] == before["available"]
    await eventually(released)


@pytest.mark.parametrize("suite", [{"auto_complete_after_s": 1}], indirect=True)
async def test_a_shipped_order_completes_by_itself(suite):
    member = suite.mint.member(LIN)
    status, order = await suite.place({"channel": "app", "lines": [{"sku_id": TEE, "qty": 1}],
                                       "fulfilment": {"type": "ship", "address": {"lat": 31.22, "lng": 121.45}}}, member)
    assert status == 201, order
    assert (await suite.pay(order["id"], member))[0] == 200
    store = order["fulfilment"]["location_id"]
    status, _, _ = await suite.call("POST", f"/orders/{order['id']}/ship", suite.mint.staff(store),
                                    json={"carrier": "SF", "tracking_number": "SF1"})
    assert status == 200

    async def completed():
        return await status_of(suite, order["id"]) == "completed"
    await eventually(completed, timeout=20)
    _, final = await suite.get(order["id"], member)
    assert final["timeline"][-1]["actor"] == "system:auto-complete"


@pytest.mark.parametrize("suite", [{"stuck_checkout_after_s": 1}], indirect=True)
async def test_a_checkout_interrupted_after_reserving_is_compensated(suite):
    """As if the orders process died right after stock reserved: the intent record is found and undone."""
    from datetime import UTC, datetime
    from services.orders.domain import order as domain, saga
    service = suite.apps["orders"][ORDERS]
    before = await suite.level(JINGAN, TEE)
    doc = domain.new_order("ord_000000000000crashed01", member_id=LIN, channel="app",
                           fulfilment={"type": "pickup", "location_id": JINGAN}, lines=[], requested_lines=[],
                           coupon_codes=[], points=0, attribution={}, created_by=f"member:{LIN}",
                           now=datetime.now(UTC))
    doc["saga"] = {"steps": [saga.RESERVE_STOCK], "started": [saga.RESERVE_STOCK]}
    await service.mongo.transaction(lambda s: service.repo.add(doc, s))
    await service.upstreams.reserve(doc["_id"], "pickup", [{"sku_id": TEE, "qty": 2}], location_id=JINGAN,
                                    destination=None, ttl_s=3600)
    assert (await suite.level(JINGAN, TEE))["available"] == before["available"] - 2

    async def released():
        reservation = await suite.reservation(doc["_id"])
        return reservation["status"] == "released"
    await eventually(released, timeout=20)
    assert await service.status_of(doc["_id"]) == "rejected"
    assert (await suite.level(JINGAN, TEE))["available"] == before["available"]


async def test_racing_pay_and_cancel_never_loses_money_or_stock(suite):
    """Pay and cancel at the same moment on many orders: a payment is either kept on a live order or refunded."""
    member = suite.mint.member(LIN)
    before = await suite.level(JINGAN, "sku_tee_classic_whi_l")
    body = {**PICKUP, "lines": [{"sku_id": "sku_tee_classic_whi_l", "qty": 1}]}
    orders = []
    for _ in range(8):
        status, order = await suite.place(body, member)
        assert status == 201, order
        orders.append(order)
    results = await asyncio.gather(*(asyncio.gather(suite.pay(o["id"], member),
                                                    suite.call("POST", f"/orders/{o['id']}/cancel", member))
                                     for o in orders))
    service = suite.apps["orders"][ORDERS]

    async def settled():
        docs = [await service.repo.get_committed(o["id"]) for o in orders]
        return all(not d["pending_actions"] for d in docs) and docs
    docs = await eventually(settled)
    for doc, ((pay_status, pay_body), (cancel_status, _, _)) in zip(docs, results):
        assert doc["status"] == "cancelled" or (doc["status"] == "confirmed" and cancel_status == 409), \
            (doc["status"], pay_status, cancel_status)
        # Every charge that went through is either the live order's payment or refunded.
        assert all(r["state"] == "done" for r in doc["refunds"]), doc["refunds"]
        if pay_status == 200 and doc["status"] == "cancelled":
            assert [r["reason"] for r in doc["refunds"]] == ["cancel"]
        if pay_status == 409 and pay_body["type"].endswith("order-not-payable"):
            assert [r["reason"] for r in doc["refunds"]] == ["late_payment"]
    live = sum(1 for d in docs if d["status"] == "confirmed")
    after = await suite.level(JINGAN, "sku_tee_classic_whi_l")
    assert after["reserved"] - before["reserved"] == live


@pytest.mark.parametrize("suite", [{"payment_window_s": 1, "reservation_margin_s": 0, "sweep_interval_s": 600,
                                    "stock": {"sweeper_interval_s": 0.5}}], indirect=True)
async def test_a_reservation_that_expires_at_stock_cancels_the_unpaid_order(suite, bus_namespace):
    """Orders' own expiry did not run (as if it were down): stock's expiry event cancels the order, so it
    can never be paid without its goods."""
    from tests.support import EventTap
    member = suite.mint.member(LIN)
    before = await suite.level(JINGAN, TEE)
    async with EventTap(bus_namespace, "orders.order.cancelled") as tap:
        status, order = await suite.place(PICKUP, member)
        assert status == 201

        async def cancelled():
            return await status_of(suite, order["id"]) == "cancelled"
        await eventually(cancelled, timeout=20)
        await eventually(lambda: tap.of("orders.order.cancelled", order_id=order["id"]))
    _, final = await suite.get(order["id"], member)
    assert final["timeline"][-1]["actor"] == "system:stock-expiry"
    assert (await suite.level(JINGAN, TEE))["available"] == before["available"]
    status, problem = await suite.pay(order["id"], member)
    assert status == 409


@pytest.mark.parametrize("suite", [{"payment_window_s": 2, "payment_attempt_timeout_s": 1}], indirect=True)
async def test_a_charge_whose_answer_was_lost_is_found_before_the_order_expires_no_money_without_an_order(suite):
    """The provider took the money but its answer never came back, and the buyer never retries: the sweeper
    asks the provider before cancelling, finds the charge and confirms the order. A charge that never
    happened lets the order expire as usual."""
    from services.orders.payments.sandbox import CARD_ANSWER_LOST, CARD_TIMEOUT, SandboxProvider
    from services.orders.usecases import PAYMENT_PROVIDER
    member = suite.mint.member(LIN)
    status, lost = await suite.place(PICKUP, member)
    assert status == 201
    status, pending = await suite.pay(lost["id"], member, card=CARD_ANSWER_LOST)
    assert status == 202 and pending["status"] == "pending_payment"
    status, never = await suite.place(PICKUP, member)
    status, _ = await suite.pay(never["id"], member, card=CARD_TIMEOUT)
    assert status == 202

    async def settled():
        return {await status_of(suite, lost["id"]), await status_of(suite, never["id"])} == {"confirmed", "cancelled"}
    await eventually(settled, timeout=30)
    assert await status_of(suite, lost["id"]) == "confirmed"
    _, paid = await suite.get(lost["id"], member)
    provider = suite.apps["orders"][PAYMENT_PROVIDER]
    attempts = await provider._kept.find({"order_id": lost["id"]}).to_list()
    assert len(attempts) == 1 and paid["payment"]["payment_id"] == attempts[0]["payment_id"]  # the money taken
    assert not paid.get("refunds")
    # The provider side remembers the charge beyond this process: a fresh adapter on its records finds it.
    fresh = SandboxProvider("another-process")
    fresh.remember_in(provider._kept)
    assert (await fresh.find_charge(attempts[0]["_id"])).succeeded


def _pending_checkout(order_id: str, owner: str | None):
    from datetime import UTC, datetime, timedelta

    from services.orders.domain import order as domain, saga
    doc = domain.new_order(order_id, member_id=LIN, channel="app", fulfilment={"type": "pickup", "location_id": JINGAN},
                           lines=[], requested_lines=[], coupon_codes=[], points=0, attribution={},
                           created_by=f"member:{LIN}", now=datetime.now(UTC) - timedelta(minutes=10))
    doc["saga"] = {"steps": [saga.RESERVE_STOCK], "started": [saga.RESERVE_STOCK]}
    if owner:
        doc["checkout_owner"] = owner
    return doc


@pytest.mark.parametrize("suite", [{"stuck_checkout_after_s": 1, "sweep_interval_s": 3600}], indirect=True)
async def test_the_sweeper_rejects_a_checkout_only_when_its_process_is_known_dead(suite):
    from libs.idempotency import PROCESS_OWNER
    from services.orders.usecases import EXPIRY
    service, expiry = suite.apps["orders"][ORDERS], suite.apps["orders"][EXPIRY]
    alive, dead = _pending_checkout("ord_000000000000alive0001", PROCESS_OWNER), \
        _pending_checkout("ord_000000000000dead00001", "host:9:gone")
    for doc in (alive, dead):
        await service.mongo.transaction(lambda s, d=doc: service.repo.add(d, s))
    done = await expiry.sweep()
    assert done["stuck_rejected"] == 1
    assert await service.status_of(dead["_id"]) == "rejected"
    assert await service.status_of(alive["_id"]) == "pending"  # slow, not dead: it finishes its own saga


@pytest.mark.parametrize("suite", [{"stuck_checkout_after_s": 1, "sweep_interval_s": 3600}], indirect=True)
async def test_a_live_checkout_rejected_meanwhile_undoes_its_late_reservation(suite):
    """Release before reserve: the checkout was rejected and its release ran (nothing was held yet); then
    its reservation landed. The checkout sees the rejection after the step and gives the stock back."""
    from services.orders.domain import saga
    from services.orders.domain.lifecycle import OrderError
    from services.orders.usecases import CHECKOUT, EXPIRY
    service, expiry, checkout = suite.apps["orders"][ORDERS], suite.apps["orders"][EXPIRY], suite.apps["orders"][CHECKOUT]
    before = await suite.level(JINGAN, TEE)
    doc = _pending_checkout("ord_000000000000late00001", "host:9:gone")
    await service.mongo.transaction(lambda s: service.repo.add(doc, s))
    await expiry.sweep()  # rejected; its stock release finds nothing to release yet
    await eventually(lambda: service.repo.get_committed(doc["_id"]))
    assert await service.status_of(doc["_id"]) == "rejected"
    try:  # the late reserve (stock may already refuse it for a released order id: then nothing is held)
        await service.upstreams.reserve(doc["_id"], "pickup", [{"sku_id": TEE, "qty": 2}], location_id=JINGAN,
                                        destination=None, ttl_s=3600)
    except Exception:
        pass
    with pytest.raises(OrderError) as refused:
        await checkout._still_running(doc["_id"], [saga.RESERVE_STOCK])
    assert refused.value.code == "checkout-rejected"

    async def given_back():
        return (await suite.level(JINGAN, TEE))["available"] == before["available"]
    await eventually(given_back, timeout=20)
