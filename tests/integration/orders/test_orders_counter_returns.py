"""Returns at a store's counter need the customer's proof (real orders, stock, catalog, membership; real HTTP).

The attack: any clerk of any store opened and received a return on any order, saw the whole order that a read
refuses, put the stock into their own store and reversed another store's and assistant's credit. Now a counter
needs the customer's return code (asked for by the member's app, short-lived, used once) or the order's payment
reference, sees only what the return needs, and a cross-store or high-value return needs a manager of the
receiving store.
"""
from __future__ import annotations

import pytest

from tests.support import eventually

JINGAN, XUJIAHUI = "loc_sh_jingan", "loc_sh_xujiahui"
TEE = "sku_tee_classic_whi_s"  # app price 9500; on hand at Jing'an
LIN, WANG = "mbr_demo_lin", "mbr_demo_wang"
HIDDEN = ("member_id", "payment", "attribution", "timeline", "coupon_codes", "points", "totals")


async def collected_order(suite, qty: int = 2) -> dict:
    """Lin buys tees online, picks them up at Jing'an: a completed order credited to Jing'an's assistant."""
    member, staff = suite.mint.member(LIN), suite.mint.staff(JINGAN)
    status, order = await suite.place({"channel": "app", "lines": [{"sku_id": TEE, "qty": qty}],
                                       "fulfilment": {"type": "pickup", "location_id": JINGAN}}, member)
    assert status == 201, order
    assert (await suite.pay(order["id"], member))[0] == 200
    status, ready, _ = await suite.call("POST", f"/orders/{order['id']}/ready-for-pickup", staff)
    status, done, _ = await suite.call("POST", f"/orders/{order['id']}/pickup", staff,
                                       json={"code": ready["dev_pickup_code"]})
    assert status == 200 and done["status"] == "completed", done
    return done


async def return_code(suite, order_id: str, member: str = LIN) -> str:
    status, answer, _ = await suite.call("POST", f"/orders/{order_id}/return-code", suite.mint.member(member))
    assert status == 200, answer
    return answer["return_code"]


async def counter_return(suite, order_id: str, headers: dict, location_id: str, proof: dict | None = None):
    body = {"lines": [{"sku_id": TEE, "qty": 1}], "reason": "too small", "location_id": location_id}
    if proof is not None:
        body["proof"] = proof
    status, answer, _ = await suite.call("POST", f"/orders/{order_id}/returns", headers, json=body)
    return status, answer


async def test_a_clerk_of_another_store_cannot_return_an_order_without_the_customers_proof(suite):
    order = await collected_order(suite)
    clerk = suite.mint.staff(XUJIAHUI, staff_id="stf_xujiahui_clerk")
    manager = suite.mint.staff(XUJIAHUI, role="store_manager", staff_id="stf_xujiahui_mgr")
    before = await suite.level(XUJIAHUI, TEE)

    # No proof, a made-up code, a guessed payment reference: refused, and the order is not shown.
    for proof, problem_type in [(None, "return-proof-required"), ({"return_code": "ABCD2345"}, "wrong-return-proof"),
                                ({"payment_id": "pay_sbx_guess"}, "wrong-return-proof")]:
        status, problem = await counter_return(suite, order["id"], clerk, XUJIAHUI, proof)
        assert status == 403 and problem["type"].endswith(f"/{problem_type}"), problem
        assert "lines" not in problem and "member_id" not in problem
    # Naming another store's counter, or receiving for one, is not theirs to do.
    assert (await counter_return(suite, order["id"], clerk, JINGAN))[0] == 404
    # Issuing a return code is the order's member's alone.
    assert (await suite.call("POST", f"/orders/{order['id']}/return-code", suite.mint.member(WANG)))[0] == 404
    assert (await suite.call("POST", f"/orders/{order['id']}/return-code", clerk))[0] == 403

    # With the member's code, a clerk of another store still cannot: cross-store returns need a manager.
    code = await return_code(suite, order["id"])
    status, problem = await counter_return(suite, order["id"], clerk, XUJIAHUI, {"return_code": code})
    assert status == 403 and problem["type"].endswith("/manager-required") and problem["reason"] == "cross-store"
    # (That refusal did not use the code up.) The manager of Xujiahui takes it and sees only what it needs.
    status, answer = await counter_return(suite, order["id"], manager, XUJIAHUI, {"return_code": code.lower()})
    assert status == 201, answer
    assert not set(HIDDEN) & set(answer["order"])
    assert [line["sku_id"] for line in answer["order"]["lines"]] == [TEE]
    returned = answer["return"]
    assert returned["location_id"] == XUJIAHUI and returned["refund_amount"] == 9500
    # The code was used once: a second return with it is refused.
    status, problem = await counter_return(suite, order["id"], manager, XUJIAHUI, {"return_code": code})
    assert status == 403 and problem["type"].endswith("/wrong-return-proof")

    # The clerk cannot receive it either (cross-store); the manager who opened it here receives it.
    receive = f"/orders/{order['id']}/returns/{returned['id']}/receive"
    status, problem, _ = await suite.call("POST", receive, clerk, json={"location_id": XUJIAHUI})
    assert status == 403, problem
    status, received, _ = await suite.call("POST", receive, manager, json={"location_id": XUJIAHUI})
    assert status == 200, received
    assert not set(HIDDEN) & set(received)
    assert received["refunds"][-1]["amount"] == 9500 and received["returns"][0]["status"] == "received"

    async def back_in_stock():
        return (await suite.level(XUJIAHUI, TEE))["on_hand"] == before["on_hand"] + 1
    await eventually(back_in_stock)
    # The owner still reads the whole order, with exactly one return and one refund.
    status, full = await suite.get(order["id"], suite.mint.member(LIN))
    assert status == 200 and len(full["returns"]) == 1 and len(full["refunds"]) == 1
    async with suite.http.get(suite.orders_url + "/metrics") as response:
        text = await response.text()
    assert 'o2o_orders_return_refusals_total{code="wrong-return-proof"}' in text
    assert 'o2o_orders_return_refusals_total{code="manager-required"}' in text


async def test_an_online_return_is_received_only_with_the_customers_proof(suite):
    order = await collected_order(suite)
    member, clerk = suite.mint.member(LIN), suite.mint.staff(JINGAN, staff_id="stf_jingan_clerk")
    status, answer, _ = await suite.call("POST", f"/orders/{order['id']}/returns", member,
                                         json={"lines": [{"sku_id": TEE, "qty": 1}], "reason": "colour"})
    assert status == 201 and answer["order"]["member_id"] == LIN  # the owner sees their whole order
    receive = f"/orders/{order['id']}/returns/{answer['return']['id']}/receive"
    # Even at the store that sold it, a clerk needs the customer at the counter: the code or the payment.
    status, problem, _ = await suite.call("POST", receive, clerk, json={"location_id": JINGAN})
    assert status == 403 and problem["type"].endswith("/return-proof-required")
    status, received, _ = await suite.call("POST", receive, clerk, json={
        "location_id": JINGAN, "proof": {"payment_id": order["payment"]["payment_id"]}})
    assert status == 200 and received["status"] == "completed", received
    assert received["member_id"] == LIN  # Jing'an's staff may read the order anyway


@pytest.mark.parametrize("suite", [{"return_manager_above_fen": 5000}], indirect=True)
async def test_a_high_value_return_needs_a_manager_even_at_the_selling_store(suite):
    order = await collected_order(suite)
    clerk = suite.mint.staff(JINGAN, staff_id="stf_jingan_clerk")
    manager = suite.mint.staff(JINGAN, role="store_manager", staff_id="stf_jingan_mgr")
    code = await return_code(suite, order["id"])
    status, problem = await counter_return(suite, order["id"], clerk, JINGAN, {"return_code": code})
    assert status == 403 and problem["reason"] == "high-value"
    status, answer = await counter_return(suite, order["id"], manager, JINGAN, {"return_code": code})
    assert status == 201 and answer["return"]["refund_amount"] == 9500
    receive = f"/orders/{order['id']}/returns/{answer['return']['id']}/receive"
    assert (await suite.call("POST", receive, clerk, json={"location_id": JINGAN}))[0] == 403
    assert (await suite.call("POST", receive, manager, json={"location_id": JINGAN}))[0] == 200
