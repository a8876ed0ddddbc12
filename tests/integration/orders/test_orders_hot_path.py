"""The flash-sale path of orders: a paid order costs orders no multi-document transaction (its events and
its Idempotency-Keys live in the order), stock holds a paid order's goods on `orders.order.confirmed`
without a call, limited SKUs bound what one order and one member may hold, and the free text of an order
request is bounded. On the real broker, real HTTP and a real MongoDB wire server."""
from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from tests.support import EventTap, eventually

JINGAN, TEE, LIN = "loc_sh_jingan", "sku_tee_classic_whi_s", "mbr_demo_lin"
PICKUP = {"channel": "app", "lines": [{"sku_id": TEE, "qty": 1}], "fulfilment": {"type": "pickup", "location_id": JINGAN}}


def order_of(qty: int) -> dict:
    return {**PICKUP, "lines": [{"sku_id": TEE, "qty": qty}]}


async def test_placing_and_paying_an_order_opens_no_transaction_and_publishes_its_events_in_order(
        suite, bus_namespace, monkeypatch):
    from services.orders.usecases import ORDERS
    member = suite.mint.member(LIN)
    status, warm = await suite.place(PICKUP, member)  # token keys, service token and prices warmed up
    assert status == 201, warm
    mongo = suite.apps["orders"][ORDERS].mongo
    opened = []
    real = mongo.transaction

    async def counted(fn, **kw):
        opened.append(fn)
        return await real(fn, **kw)

    async with EventTap(bus_namespace, "orders.order.#") as tap:
        monkeypatch.setattr(mongo, "transaction", counted)  # orders' own database only
        status, order = await suite.place(PICKUP, member, key="hot-1")
        assert status == 201, order
        status, paid, _ = await suite.call("POST", f"/orders/{order['id']}/pay",
                                           {**member, "Idempotency-Key": "hot-pay-1"},
                                           json={"card_number": "4242424242424242"})
        assert status == 200 and paid["status"] == "confirmed", paid
        # Replays come from the order itself.
        status, again, headers = await suite.call("POST", "/orders", {**member, "Idempotency-Key": "hot-1"},
                                                  json=PICKUP)
        assert status == 201 and again["id"] == order["id"] and headers.get("Idempotent-Replayed") == "true"
        status, repaid, headers = await suite.call("POST", f"/orders/{order['id']}/pay",
                                                   {**member, "Idempotency-Key": "hot-pay-1"},
                                                   json={"card_number": "4242424242424242"})
        assert status == 200 and repaid["payment"] == paid["payment"] and headers.get("Idempotent-Replayed") == "true"
        monkeypatch.undo()
        assert opened == [], f"{len(opened)} transactions on the hot path"
        events = await tap.wait_for("orders.order.confirmed", order_id=order["id"])
        assert [e["type"] for e in tap.events if e["data"].get("order_id") == order["id"]] == \
            ["orders.order.placed", "orders.order.confirmed"], tap.events
        assert events[0]["data"]["attribution"]["staff_id"] == "stf_jingan_01"  # Lin's binding

    # Stock heard the confirmation and holds the goods for days, without a call from orders.
    async def held_long():
        reservation = await suite.reservation(order["id"])
        expires = datetime.fromisoformat(reservation["expires_at"].replace("Z", "+00:00")).timestamp()
        return reservation["status"] == "reserved" and expires - time.time() > 86400
    await eventually(held_long)
    stored = await suite.apps["orders"][ORDERS].repo.get_committed(order["id"])
    assert stored["pending_actions"] == [] and not stored["outbox_pending"]


@pytest.mark.parametrize("suite", [{"limited_skus": {TEE: {"per_order": 2, "per_member": 3}}}], indirect=True)
async def test_a_limited_sku_bounds_one_order_and_one_member(suite):
    member = suite.mint.member(LIN)
    status, moved = await suite.stock_move({"kind": "receive", "location_id": JINGAN, "sku_id": TEE, "qty": 20,
                                            "key": "limits-top-up"})
    assert status == 201, moved
    before = await suite.level(JINGAN, TEE)
    status, problem = await suite.place(order_of(3), member)
    assert status == 422 and problem["type"].endswith("quantity-limit") and problem["limit"] == 2
    status, first = await suite.place(order_of(2), member)
    assert status == 201, first
    status, problem = await suite.place(order_of(2), member)
    assert status == 409 and problem["type"].endswith("member-limit-reached"), problem
    status, second = await suite.place(order_of(1), member)  # 3 in all: within the member's limit
    assert status == 201, second
    status, _, _ = await suite.call("POST", f"/orders/{first['id']}/cancel", member, json={})
    assert status == 200
    status, third = await suite.place(order_of(2), member)  # a cancelled order holds nothing
    assert status == 201, third
    # Another member is not limited by Lin's orders.
    status, other = await suite.place(order_of(2), suite.mint.member("mbr_demo_chen"))
    assert status == 201, other
    after = await suite.level(JINGAN, TEE)
    assert before["available"] - after["available"] == 1 + 2 + 2  # Lin's live orders and Chen's


async def test_the_free_text_of_an_order_request_is_bounded_and_a_refused_one_writes_nothing(suite):
    from services.orders.usecases import ORDERS
    member = suite.mint.member(LIN)
    repo = suite.apps["orders"][ORDERS].repo
    count = await repo.collection.count_documents({})
    huge = {"channel": "app", "lines": [{"sku_id": TEE, "qty": 1}],
            "fulfilment": {"type": "ship", "address": {"lat": 31.2, "lng": 121.4, "line1": "x" * 900_000}}}
    unknown = {**huge, "fulfilment": {"type": "ship", "address": {"lat": 31.2, "lng": 121.4, "extra": "y"}}}
    for body in (huge, unknown):
        status, problem, _ = await suite.call("POST", "/orders", {**member, "Content-Type": "application/json"},
                                              data=json.dumps(body))
        assert status in (413, 422), (status, problem)
    status, fine = await suite.place({**huge, "fulfilment": {"type": "ship", "address": {
        "lat": 31.2, "lng": 121.4, "name": "Lin Xiaomei", "line1": "99 Tianyaoqiao Rd", "city": "Shanghai"}}}, member)
    assert status == 201, fine
    assert fine["fulfilment"]["address"]["line1"] == "99 Tianyaoqiao Rd"
    assert await repo.collection.count_documents({}) == count + 1
