"""The movement ledger over real HTTP: idempotent keys, counts, transfers, staff scope."""
import asyncio
import uuid

SKU = "sku_ledger_tee"


def key() -> str:
    return f"mv_{uuid.uuid4().hex[:12]}"


async def store(api, **fields):
    return (await api.location(id=f"loc_mv_{uuid.uuid4().hex[:6]}", name="ledger store", lat=31.2, lng=121.4,
                               **fields))["id"]


async def test_replaying_a_movement_with_the_same_key_changes_nothing_even_concurrently(stock_api):
    loc = await store(stock_api)
    body = {"kind": "receive", "key": key(), "location_id": loc, "sku_id": SKU, "qty": 7}
    results = await asyncio.gather(*(stock_api.move(body) for _ in range(20)))
    assert {status for status, _ in results} == {201}
    assert len({payload["id"] for _, payload in results}) == 1
    level = await stock_api.level(loc, SKU)
    assert (level["on_hand"], level["available"]) == (7, 7)
    status, ledger, _ = await stock_api.call("GET", f"/stock/movements?location_id={loc}", stock_api.admin)
    assert len(ledger["items"]) == 1
    # Same key, another movement: refused, nothing changes.
    status, problem = await stock_api.move({**body, "qty": 8})
    assert status == 422 and problem["type"].endswith("/movement-key-reused")
    assert (await stock_api.level(loc, SKU))["on_hand"] == 7


async def test_ledger_explains_every_number(stock_api):
    loc = await store(stock_api)
    steps = [
        {"kind": "receive", "qty": 10},
        {"kind": "sale", "qty": 2},
        {"kind": "adjust", "delta": -1, "reason": "damaged", "note": "damaged in store"},
        {"kind": "count", "counted": 5},
        {"kind": "return_to_stock", "qty": 1, "reference": "ord_returned"},
    ]
    for step in steps:
        status, payload = await stock_api.move({"key": key(), "location_id": loc, "sku_id": SKU, **step})
        assert status == 201, payload
    status, ledger, _ = await stock_api.call("GET", f"/stock/movements?location_id={loc}&sku_id={SKU}&limit=2",
                                             stock_api.admin)
    entries = ledger["items"]
    assert ledger["next_cursor"]
    while ledger["next_cursor"]:
        _, ledger, _ = await stock_api.call(
            "GET", f"/stock/movements?location_id={loc}&sku_id={SKU}&limit=2&cursor={ledger['next_cursor']}",
            stock_api.admin)
        entries += ledger["items"]
    entries.reverse()
    assert [e["kind"] for e in entries] == ["receive", "sale", "adjust", "count", "return_to_stock"]
    assert [e["delta"] for e in entries] == [10, -2, -1, -2, 1]
    assert entries[3]["variance"] == -2
    running = 0
    for entry in entries:
        assert entry["on_hand_before"] == running
        running += entry["delta"]
        assert entry["on_hand_after"] == running
    assert (await stock_api.level(loc, SKU))["on_hand"] == running == 6


async def test_goods_cannot_leave_beyond_available_and_nothing_changes(stock_api):
    loc = await store(stock_api)
    await stock_api.stock_up(loc, SKU, 3)
    assert (await stock_api.reserve({"order_id": f"ord_{uuid.uuid4().hex[:8]}", "mode": "in_store",
                                     "location_id": loc, "lines": [{"sku_id": SKU, "qty": 2}]}))[0] == 201
    status, problem = await stock_api.move({"kind": "sale", "key": key(), "location_id": loc, "sku_id": SKU, "qty": 2})
    assert status == 409 and problem["type"].endswith("/insufficient-stock")
    status, problem = await stock_api.move({"kind": "count", "key": key(), "location_id": loc, "sku_id": SKU,
                                            "counted": 1})
    assert status == 409 and problem["type"].endswith("/count-below-reserved")
    level = await stock_api.level(loc, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (3, 2, 1)


async def test_concurrent_sales_never_take_a_level_below_zero(stock_api):
    loc = await store(stock_api)
    await stock_api.stock_up(loc, SKU, 10)
    results = await asyncio.gather(*(stock_api.move({"kind": "sale", "key": key(), "location_id": loc, "sku_id": SKU,
                                                     "qty": 3}) for _ in range(10)))
    assert sorted(status for status, _ in results) == [201] * 3 + [409] * 7
    level = await stock_api.level(loc, SKU)
    assert (level["on_hand"], level["available"]) == (1, 1)


async def test_transfer_goes_out_in_transit_and_in_once(stock_api):
    source, target = await store(stock_api), await store(stock_api)
    await stock_api.stock_up(source, SKU, 6)
    status, out = await stock_api.move({"kind": "transfer_out", "key": key(), "location_id": source,
                                        "to_location_id": target, "sku_id": SKU, "qty": 4})
    assert status == 201 and out["transfer_id"].startswith("trf_")
    assert (await stock_api.level(source, SKU))["on_hand"] == 2
    assert (await stock_api.level(target, SKU))["in_transit"] == 4
    receive = {"kind": "transfer_in", "key": key(), "transfer_id": out["transfer_id"]}
    results = await asyncio.gather(*(stock_api.move(receive, stock_api.staff_of(target)) for _ in range(5)))
    assert {status for status, _ in results} == {201}
    status, problem = await stock_api.move({**receive, "key": key()})
    assert status == 409 and problem["type"].endswith("/transfer-received")
    level = await stock_api.level(target, SKU)
    assert (level["on_hand"], level["available"], level["in_transit"]) == (4, 4, 0)


async def test_store_staff_may_move_stock_only_in_their_own_store(stock_api):
    mine, other = await store(stock_api), await store(stock_api)
    staff = stock_api.staff_of(mine)
    status, _ = await stock_api.move({"kind": "receive", "key": key(), "location_id": mine, "sku_id": SKU, "qty": 1},
                                     staff)
    assert status == 201
    status, problem = await stock_api.move({"kind": "receive", "key": key(), "location_id": other, "sku_id": SKU,
                                            "qty": 1}, staff)
    assert status == 403 and problem["type"].endswith("/forbidden")
    status, body, _ = await stock_api.call("GET", f"/stock/levels?location_id={other}", staff)
    assert status == 404
    status, body, _ = await stock_api.call("GET", "/stock/levels", staff)
    assert status == 200 and {item["location_id"] for item in body["items"]} == {mine}
    status, problem, _ = await stock_api.call("POST", "/stock/locations", staff, json={
        "name": "x", "kind": "store", "lat": 1, "lng": 1})
    assert status == 403


async def test_level_low_is_published_when_available_drops_under_the_reorder_point(stock_api, event_tap):
    await event_tap.start("stock.#")
    loc = await store(stock_api)
    await stock_api.stock_up(loc, SKU, 4)  # default reorder point is 2
    await stock_api.move({"kind": "sale", "key": key(), "location_id": loc, "sku_id": SKU, "qty": 3})
    await stock_api.move({"kind": "sale", "key": key(), "location_id": loc, "sku_id": SKU, "qty": 1})
    from tests.support import eventually
    low = await eventually(lambda: event_tap.of("stock.level_low", location_id=loc))
    assert low[0]["data"] == {"location_id": loc, "sku_id": SKU, "available": 1, "on_hand": 1, "reorder_point": 2}
    assert low[0]["source"] == "stock" and low[0]["subject"] == f"{loc}:{SKU}"


async def test_a_manager_sets_the_reorder_point_of_their_store_and_low_stock_follows_it(stock_api, event_tap):
    await event_tap.start("stock.level_low")
    loc, other = await store(stock_api), await store(stock_api)
    manager = stock_api.staff_of(loc, role="store_manager")
    await stock_api.stock_up(loc, SKU, 10)
    status, level, _ = await stock_api.call("PUT", f"/stock/levels/{loc}/{SKU}", manager, json={"reorder_point": 6})
    assert status == 200 and level["reorder_point"] == 6 and level["on_hand"] == 10
    assert (await stock_api.call("PUT", f"/stock/levels/{other}/{SKU}", manager, json={"reorder_point": 1}))[0] == 403
    assert (await stock_api.call("PUT", f"/stock/levels/{loc}/{SKU}", manager, json={"reorder_point": -1}))[0] == 422
    assert (await stock_api.call("PUT", f"/stock/levels/{loc}/bogus", manager, json={"reorder_point": 1}))[0] == 422
    await stock_api.move({"kind": "sale", "key": key(), "location_id": loc, "sku_id": SKU, "qty": 5})
    from tests.support import eventually
    low = await eventually(lambda: event_tap.of("stock.level_low", location_id=loc))
    assert low[0]["data"]["available"] == 5 and low[0]["data"]["reorder_point"] == 6


async def test_an_idempotency_key_replays_the_first_answer_of_a_create(stock_api):
    import uuid
    loc_id = f"loc_ik_{uuid.uuid4().hex[:6]}"
    body = {"id": loc_id, "name": "keyed", "kind": "store", "lat": 31.2, "lng": 121.4,
            "capabilities": {"pickup": True}}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await stock_api.call("POST", "/stock/locations", {**stock_api.admin, **key}, json=body)
    again = await stock_api.call("POST", "/stock/locations", {**stock_api.admin, **key}, json=body)
    assert first[0] == again[0] == 201 and first[1] == again[1]
    assert again[2].get("Idempotent-Replayed") == "true"
    # Without the key, the same id is a conflict.
    assert (await stock_api.call("POST", "/stock/locations", stock_api.admin, json=body))[0] == 409
    movement = {"kind": "receive", "key": f"ik-{uuid.uuid4().hex}", "location_id": loc_id, "sku_id": SKU, "qty": 3}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await stock_api.call("POST", "/stock/movements", {**stock_api.admin, **key}, json=movement)
    again = await stock_api.call("POST", "/stock/movements", {**stock_api.admin, **key}, json=movement)
    assert first[0] == again[0] == 201 and first[1] == again[1]
    assert (await stock_api.level(loc_id, SKU))["on_hand"] == 3
    order = {"order_id": f"ord_{uuid.uuid4().hex[:8]}", "mode": "pickup", "location_id": loc_id,
             "lines": [{"sku_id": SKU, "qty": 2}]}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await stock_api.call("POST", "/stock/internal/reservations", {**stock_api.service, **key}, json=order)
    again = await stock_api.call("POST", "/stock/internal/reservations", {**stock_api.service, **key}, json=order)
    assert first[0] == again[0] == 201 and first[1] == again[1]
    assert (await stock_api.level(loc_id, SKU))["reserved"] == 2
