"""A store clerk's word is not enough to move stock in bulk (over real HTTP on the real broker and wire server).

The attack: a clerk receives or adjusts a million units at their store (or writes a count that makes stock
appear or vanish). Now every movement is bounded, names a reason code from a closed set, and a clerk's
adjustment, count, receipt or return above a small threshold waits for a manager of that store, who approves
(the movement lands in the ledger) or rejects it (nothing changes); both are published and counted.
"""
from __future__ import annotations

import uuid

from tests.support import eventually

SKU = "sku_approval_tee"


def key() -> str:
    return f"mv_{uuid.uuid4().hex[:12]}"


async def store(api) -> str:
    return (await api.location(id=f"loc_ap_{uuid.uuid4().hex[:6]}", name="approval store", lat=31.2,
                               lng=121.4))["id"]


async def test_a_clerk_cannot_receive_or_adjust_a_million_units(stock_api):
    loc = await store(stock_api)
    await stock_api.stock_up(loc, SKU, 10)
    clerk = stock_api.staff_of(loc)
    for movement in ({"kind": "receive", "qty": 1_000_000}, {"kind": "adjust", "delta": 1_000_000, "reason": "found"},
                     {"kind": "adjust", "delta": -1_000_000, "reason": "lost"}, {"kind": "count", "counted": 1_000_000}):
        status, problem = await stock_api.move({"key": key(), "location_id": loc, "sku_id": SKU, **movement}, clerk)
        assert status == 422 and problem["type"].endswith("/movement-too-large"), (movement, problem)
    # HQ is bounded too: one movement is never a million units.
    status, problem = await stock_api.move({"kind": "receive", "key": key(), "location_id": loc, "sku_id": SKU,
                                            "qty": 1_000_000})
    assert status == 422 and problem["type"].endswith("/movement-too-large")
    level = await stock_api.level(loc, SKU)
    assert (level["on_hand"], level["available"]) == (10, 10)
    _, ledger, _ = await stock_api.call("GET", f"/stock/movements?location_id={loc}", stock_api.admin)
    assert len(ledger["items"]) == 1  # only the seed


async def test_reasons_are_codes_that_fit_the_movement(stock_api):
    loc = await store(stock_api)
    await stock_api.stock_up(loc, SKU, 10)
    clerk = stock_api.staff_of(loc)
    base = {"kind": "adjust", "location_id": loc, "sku_id": SKU}
    refused = [({"delta": -1, "reason": "because I say so"}, "validation-error"),
               ({"delta": -1}, "validation-error"),
               ({"delta": 2, "reason": "damaged"}, "invalid-reason"),
               ({"delta": -2, "reason": "found"}, "invalid-reason")]
    for fields, problem_type in refused:
        status, problem = await stock_api.move({**base, "key": key(), **fields}, clerk)
        assert status == 422 and problem["type"].endswith(f"/{problem_type}"), (fields, problem)
    status, problem = await stock_api.move({"kind": "receive", "key": key(), "location_id": loc, "sku_id": SKU,
                                            "qty": 1, "reason": "theft"}, clerk)
    assert status == 422 and problem["type"].endswith("/invalid-reason")
    # A small adjustment within the threshold is the clerk's to make, with its code and a note.
    status, moved = await stock_api.move({**base, "key": key(), "delta": -2, "reason": "damaged",
                                          "note": "dropped two at the counter"}, clerk)
    assert status == 201, moved
    assert (moved["reason"], moved["note"], moved["delta"], moved["approved_by"]) == (
        "damaged", "dropped two at the counter", -2, None)
    status, received = await stock_api.move({"kind": "receive", "key": key(), "location_id": loc, "sku_id": SKU,
                                             "qty": 3}, clerk)
    assert status == 201 and received["reason"] == "receiving"
    assert (await stock_api.level(loc, SKU))["on_hand"] == 11


async def test_a_clerks_bulk_adjustment_waits_for_a_manager_of_the_store(stock_api, event_tap):
    await event_tap.start("stock.movement.#")
    loc, other = await store(stock_api), await store(stock_api)
    await stock_api.stock_up(loc, SKU, 300)
    clerk, manager = stock_api.staff_of(loc), stock_api.mint.staff(loc, role="store_manager", staff_id="stf_mgr")
    other_manager = stock_api.mint.staff(other, role="store_manager", staff_id="stf_other_mgr")
    movement = {"kind": "adjust", "key": key(), "location_id": loc, "sku_id": SKU, "delta": -250, "reason": "lost"}
    status, asked = await stock_api.move(movement, clerk)
    assert status == 202, asked
    assert (asked["status"], asked["units"], asked["kind"], asked["reason"]) == ("pending", 250, "adjust", "lost")
    assert (await stock_api.level(loc, SKU))["on_hand"] == 300  # nothing moved yet
    # The same key again answers the same pending approval; another movement under it is refused.
    assert await stock_api.move(movement, clerk) == (202, asked)
    status, problem = await stock_api.move({**movement, "delta": -251}, clerk)
    assert status == 422 and problem["type"].endswith("/movement-key-reused")

    approve = f"/stock/approvals/{asked['id']}/approve"
    status, problem, _ = await stock_api.call("POST", approve, clerk, json={})
    assert status == 403  # the clerk cannot approve their own (or any) movement
    status, problem, _ = await stock_api.call("POST", approve, other_manager, json={})
    assert status == 404  # another store's manager does not even see it
    status, pending, _ = await stock_api.call("GET", f"/stock/approvals?location_id={loc}&status=pending", manager)
    assert status == 200 and [a["id"] for a in pending["items"]] == [asked["id"]]
    status, _, _ = await stock_api.call("GET", f"/stock/approvals?location_id={loc}", other_manager)
    assert status == 404

    status, approved, _ = await stock_api.call("POST", approve, manager, json={"note": "checked the stockroom"})
    assert status == 200, approved
    assert (approved["status"], approved["decided_by"], approved["decision_note"]) == (
        "approved", "stf_mgr", "checked the stockroom")
    assert approved["movement_id"]
    level = await stock_api.level(loc, SKU)
    assert (level["on_hand"], level["available"]) == (50, 50)
    _, ledger, _ = await stock_api.call("GET", f"/stock/movements?location_id={loc}&limit=1", manager)
    line = ledger["items"][0]
    assert (line["id"], line["delta"], line["reason"], line["approval_id"], line["approved_by"]) == (
        approved["movement_id"], -250, "lost", asked["id"], "stf_mgr")
    assert line["actor"] == asked["requested_by"] == f"stf_{loc}"
    # Decided once: approving again changes nothing; the clerk's replay now answers the ledger line.
    status, problem, _ = await stock_api.call("POST", approve, manager, json={})
    assert status == 409 and problem["type"].endswith("/approval-decided")
    status, replay = await stock_api.move(movement, clerk)
    assert status == 201 and replay["id"] == approved["movement_id"]
    assert (await stock_api.level(loc, SKU))["on_hand"] == 50

    requested = await eventually(lambda: event_tap.of("stock.movement.approval_requested", approval_id=asked["id"]))
    assert requested[0]["data"]["units"] == 250 and requested[0]["data"]["location_id"] == loc
    done = await eventually(lambda: event_tap.of("stock.movement.approved", approval_id=asked["id"]))
    assert done[0]["data"]["delta"] == -250 and done[0]["data"]["movement_id"] == approved["movement_id"]
    async with stock_api.http.get(stock_api.base + "/metrics") as response:
        assert 'o2o_stock_movement_approvals_total{kind="adjust",outcome="approved"}' in await response.text()


async def test_a_clerks_count_and_bulk_receipt_wait_and_a_rejection_changes_nothing(stock_api, event_tap):
    await event_tap.start("stock.movement.#")
    loc = await store(stock_api)
    await stock_api.stock_up(loc, SKU, 40)
    clerk, manager = stock_api.staff_of(loc), stock_api.mint.staff(loc, role="store_manager", staff_id="stf_mgr")
    status, count = await stock_api.move({"kind": "count", "key": key(), "location_id": loc, "sku_id": SKU,
                                          "counted": 5000}, clerk)
    assert status == 202 and count["units"] == 4960 and count["reason"] == "count_correction"
    status, receipt = await stock_api.move({"kind": "receive", "key": key(), "location_id": loc, "sku_id": SKU,
                                            "qty": 900}, clerk)
    assert status == 202 and receipt["kind"] == "receive"
    status, rejected, _ = await stock_api.call("POST", f"/stock/approvals/{count['id']}/reject", manager,
                                               json={"note": "recount the back room"})
    assert status == 200 and rejected["status"] == "rejected" and rejected["movement_id"] is None
    assert (await stock_api.call("POST", f"/stock/approvals/{count['id']}/approve", manager, json={}))[0] == 409
    assert (await stock_api.level(loc, SKU))["on_hand"] == 40
    # A small count within the threshold is the clerk's; the manager's own bulk receipt needs nobody.
    status, small = await stock_api.move({"kind": "count", "key": key(), "location_id": loc, "sku_id": SKU,
                                          "counted": 38}, clerk)
    assert status == 201 and small["variance"] == -2
    status, own = await stock_api.move({"kind": "receive", "key": key(), "location_id": loc, "sku_id": SKU,
                                        "qty": 900}, manager)
    assert status == 201 and own["delta"] == 900
    assert (await stock_api.level(loc, SKU))["on_hand"] == 938
    done = await eventually(lambda: event_tap.of("stock.movement.rejected", approval_id=count["id"]))
    assert done[0]["data"]["note"] == "recount the back room" and done[0]["data"]["units"] == 4960
