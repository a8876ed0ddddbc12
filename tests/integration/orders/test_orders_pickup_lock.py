"""A wrong pickup code is refused; after the limit the order is locked for handover and a
store manager must reset it (a new code); concurrent guesses never get more tries than the limit."""
from __future__ import annotations

import asyncio

import pytest

JINGAN, TEE, LIN = "loc_sh_jingan", "sku_tee_classic_whi_s", "mbr_demo_lin"


async def ready_order(suite) -> tuple[str, str]:
    member, staff = suite.mint.member(LIN), suite.mint.staff(JINGAN)
    status, order = await suite.place({"channel": "app", "lines": [{"sku_id": TEE, "qty": 1}],
                                       "fulfilment": {"type": "pickup", "location_id": JINGAN}}, member)
    assert status == 201, order
    status, paid = await suite.pay(order["id"], member)
    assert status == 200, paid
    status, ready, _ = await suite.call("POST", f"/orders/{order['id']}/ready-for-pickup", staff)
    assert status == 200, ready
    return order["id"], ready["dev_pickup_code"]


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


async def test_wrong_codes_are_refused_then_the_order_locks_until_a_manager_resets(suite):
    order_id, code = await ready_order(suite)
    staff, manager = suite.mint.staff(JINGAN), suite.mint.staff(JINGAN, role="store_manager")
    for attempt in range(1, 5):
        status, problem, _ = await suite.call("POST", f"/orders/{order_id}/pickup", staff, json={"code": wrong(code)})
        assert status == 422 and problem["type"].endswith("wrong-pickup-code")
        assert problem["attempts_left"] == 5 - attempt
    status, problem, _ = await suite.call("POST", f"/orders/{order_id}/pickup", staff, json={"code": wrong(code)})
    assert status == 423 and problem["type"].endswith("pickup-locked")
    # Locked: even the right code is refused now, and the order is still waiting at the store.
    status, problem, _ = await suite.call("POST", f"/orders/{order_id}/pickup", staff, json={"code": code})
    assert status == 423 and problem["type"].endswith("pickup-locked")
    status, order = await suite.get(order_id, staff)
    assert order["status"] == "ready_for_pickup" and order["pickup"] == {"failed_attempts": 5, "locked": True}

    # Plain staff may not reset; the manager of that store can, which issues a new code.
    status, problem, _ = await suite.call("POST", f"/orders/{order_id}/pickup-code/reset", staff)
    assert status == 403
    status, reset, _ = await suite.call("POST", f"/orders/{order_id}/pickup-code/reset", manager)
    assert status == 200, reset
    new_code = reset["dev_pickup_code"]
    assert reset["pickup"] == {"failed_attempts": 0, "locked": False}
    if new_code != code:
        status, problem, _ = await suite.call("POST", f"/orders/{order_id}/pickup", staff, json={"code": code})
        assert status == 422  # the old code died with the reset
    status, done, _ = await suite.call("POST", f"/orders/{order_id}/pickup", staff, json={"code": new_code})
    assert status == 200 and done["status"] == "completed"


async def test_concurrent_guesses_get_no_more_than_the_limit(suite):
    order_id, code = await ready_order(suite)
    staff = suite.mint.staff(JINGAN)
    guesses = [f"{(int(code) + i) % 1_000_000:06d}" for i in range(1, 31)]
    answers = await asyncio.gather(*(suite.call("POST", f"/orders/{order_id}/pickup", staff, json={"code": g})
                                     for g in guesses))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses.count(422) == 4 and statuses.count(423) == 26, statuses
    status, order = await suite.get(order_id, staff)
    assert order["pickup"]["failed_attempts"] == 5 and order["status"] == "ready_for_pickup"


@pytest.mark.parametrize("who", ["other_store_staff", "member"])
async def test_only_staff_of_the_store_hand_over(suite, who):
    order_id, code = await ready_order(suite)
    headers = suite.mint.staff("loc_sh_xujiahui") if who == "other_store_staff" else suite.mint.member(LIN)
    status, problem, _ = await suite.call("POST", f"/orders/{order_id}/pickup", headers, json={"code": code})
    assert status in (403, 404), problem
    status, order = await suite.get(order_id, suite.mint.staff(JINGAN))
    assert order["status"] == "ready_for_pickup" and order["pickup"]["failed_attempts"] == 0
