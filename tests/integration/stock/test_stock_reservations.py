"""Reservations over real HTTP on the real wire server: contention, capacity, expiry, commit, replay."""
import asyncio
import uuid

import pytest

from tests.support import eventually

CUSTOMER = {"lat": 31.2300, "lng": 121.4500}
SKU = "sku_flash_tee"


def oid() -> str:
    return f"ord_{uuid.uuid4().hex[:12]}"


async def three_stores(api, stock: tuple[int, int, int], capacity: tuple[int, int, int] = (100, 100, 100)):
    """Three stores east of the customer at ~1, ~3 and ~6 km, each holding `stock` units of SKU."""
    ids = []
    for name, lng, units, cap in zip(("near", "mid", "far"), (121.4605, 121.4815, 121.5130), stock, capacity):
        loc = await api.location(id=f"loc_{name}_{uuid.uuid4().hex[:6]}", name=f"{name} store", lat=31.23, lng=lng,
                                 daily_capacity=cap)
        if units:
            await api.stock_up(loc["id"], SKU, units)
        ids.append(loc["id"])
    return ids


def ship(order_id: str, qty: int = 1, sku: str = SKU) -> dict:
    return {"order_id": order_id, "mode": "ship", "lines": [{"sku_id": sku, "qty": qty}], "destination": CUSTOMER}


async def test_200_concurrent_reservations_for_50_units_over_3_stores_reserve_exactly_50(stock_api):
    stores = await three_stores(stock_api, (20, 20, 10))
    results = await asyncio.gather(*(stock_api.reserve(ship(oid())) for _ in range(200)))

    won = [body for status, body in results if status == 201]
    lost = [(status, body) for status, body in results if status != 201]
    assert len(won) == 50
    assert len(lost) == 150
    assert all(status == 409 and body["type"].endswith("/sold-out") for status, body in lost)
    reserved_by_store = {}
    for body in won:
        for allocation in body["allocations"]:
            for line in allocation["lines"]:
                reserved_by_store[allocation["location_id"]] = reserved_by_store.get(allocation["location_id"], 0) + line["qty"]
    assert reserved_by_store == dict(zip(stores, (20, 20, 10)))
    for store, units in zip(stores, (20, 20, 10)):
        level = await stock_api.level(store, SKU)
        assert level == {**level, "on_hand": units, "reserved": units, "available": 0}
    # Every reservation is distinct and answers for its own order.
    assert len({body["reservation_id"] for body in won}) == 50


async def test_ship_capacity_of_2_per_day_sends_the_third_order_to_the_next_closest_and_release_gives_it_back(stock_api):
    near, mid, _ = await three_stores(stock_api, (10, 10, 10), capacity=(2, 100, 100))
    orders = [oid() for _ in range(3)]
    placed = [await stock_api.reserve(ship(order)) for order in orders]
    assert [status for status, _ in placed] == [201, 201, 201]
    assert [body["allocations"][0]["location_id"] for _, body in placed] == [near, near, mid]
    third = placed[2][1]["decision"]
    assert "capacity-full" in next(c for c in third["candidates"] if c["location_id"] == near)["excluded"]

    status, body, _ = await stock_api.call("POST", f"/stock/internal/reservations/{orders[0]}/release",
                                           stock_api.service, json={"reason": "cancelled"})
    assert status == 200 and body["status"] == "released"
    status, body = await stock_api.reserve(ship(oid()))
    assert status == 201 and body["allocations"][0]["location_id"] == near
    status, body = await stock_api.reserve(ship(oid()))
    assert status == 201 and body["allocations"][0]["location_id"] == mid


async def test_concurrent_ship_orders_never_exceed_daily_capacity(stock_api):
    near, mid, far = await three_stores(stock_api, (50, 50, 50), capacity=(3, 2, 1))
    results = await asyncio.gather(*(stock_api.reserve(ship(oid())) for _ in range(10)))
    placed = [body["allocations"][0]["location_id"] for status, body in results if status == 201]
    assert sorted(placed) == sorted([near] * 3 + [mid] * 2 + [far])
    assert sum(1 for status, body in results if status == 409 and body["type"].endswith("/sold-out")) == 4


@pytest.mark.parametrize("stock_api", [{"sweeper_interval_s": 0.2}], indirect=True)
async def test_expired_reservation_is_released_by_the_sweeper_and_a_later_commit_is_refused(stock_api):
    near, _, _ = await three_stores(stock_api, (5, 0, 0), capacity=(1, 0, 0))
    order = oid()
    status, body = await stock_api.reserve({**ship(order, qty=2), "ttl_s": 1})
    assert status == 201 and body["allocations"][0]["location_id"] == near
    assert (await stock_api.level(near, SKU))["available"] == 3

    async def released():
        _, doc, _ = await stock_api.call("GET", f"/stock/internal/reservations/{order}", stock_api.service)
        return doc if doc["status"] == "released" else None

    doc = await eventually(released, timeout=20)
    assert doc["release_reason"] == "expired"
    level = await stock_api.level(near, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (5, 0, 5)
    status, body, headers = await stock_api.call("POST", f"/stock/internal/reservations/{order}/commit",
                                                 stock_api.service)
    assert status == 409 and body["type"].endswith("/reservation-released")
    assert headers["Content-Type"].startswith("application/problem+json")
    # The expired order's capacity came back: the store (capacity 1) takes the next ship order.
    status, body = await stock_api.reserve(ship(oid()))
    assert status == 201 and body["allocations"][0]["location_id"] == near


@pytest.mark.parametrize("stock_api", [{"sweeper_interval_s": 0.2}], indirect=True)
async def test_extended_reservation_survives_the_sweeper_and_commits(stock_api):
    near, _, _ = await three_stores(stock_api, (5, 0, 0))
    kept, dropped = oid(), oid()
    for order in (kept, dropped):
        assert (await stock_api.reserve({**ship(order), "ttl_s": 1}))[0] == 201
    status, body, _ = await stock_api.call("POST", f"/stock/internal/reservations/{kept}/extend", stock_api.service,
                                           json={"ttl_s": 600})
    assert status == 200 and body["status"] == "reserved"

    async def dropped_released():
        _, doc, _ = await stock_api.call("GET", f"/stock/internal/reservations/{dropped}", stock_api.service)
        return doc["status"] == "released"

    await eventually(dropped_released, timeout=20)
    status, body, _ = await stock_api.call("POST", f"/stock/internal/reservations/{kept}/commit", stock_api.service)
    assert status == 200 and body["status"] == "committed"


async def test_commit_takes_goods_off_hand_once_and_writes_the_ledger(stock_api):
    near, _, _ = await three_stores(stock_api, (5, 0, 0))
    order = oid()
    assert (await stock_api.reserve(ship(order, qty=2)))[0] == 201
    commits = await asyncio.gather(*(stock_api.call("POST", f"/stock/internal/reservations/{order}/commit",
                                                    stock_api.service) for _ in range(5)))
    assert {(status, body["status"]) for status, body, _ in commits} == {(200, "committed")}
    level = await stock_api.level(near, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (3, 0, 3)
    status, ledger, _ = await stock_api.call("GET", f"/stock/movements?location_id={near}&sku_id={SKU}",
                                             stock_api.admin)
    assert [(m["kind"], m["delta"], m["on_hand_after"]) for m in ledger["items"]] == [
        ("reservation_commit", -2, 3), ("receive", 5, 5)]
    status, body, _ = await stock_api.call("POST", f"/stock/internal/reservations/{order}/release", stock_api.service)
    assert status == 409 and body["type"].endswith("/reservation-committed")


async def test_replaying_a_reservation_for_the_same_order_changes_nothing(stock_api):
    near, _, _ = await three_stores(stock_api, (5, 0, 0))
    order = oid()
    results = await asyncio.gather(*(stock_api.reserve(ship(order, qty=2)) for _ in range(10)))
    assert {status for status, _ in results} == {201}
    assert len({body["reservation_id"] for _, body in results}) == 1
    again = await stock_api.reserve(ship(order, qty=2))
    assert again == results[0]
    level = await stock_api.level(near, SKU)
    assert (level["reserved"], level["available"]) == (2, 3)
    status, body = await stock_api.reserve(ship(order, qty=3))
    assert status == 409 and body["type"].endswith("/order-id-reused")
    assert (await stock_api.level(near, SKU))["reserved"] == 2


async def test_pickup_at_a_store_without_the_goods_is_refused_with_the_nearest_stores_that_have_them(stock_api):
    near, mid, far = await three_stores(stock_api, (0, 2, 4))
    status, body = await stock_api.reserve({"order_id": oid(), "mode": "pickup", "location_id": near,
                                            "lines": [{"sku_id": SKU, "qty": 3}]})
    assert status == 409 and body["type"].endswith("/sold-out")
    assert [n["location_id"] for n in body["nearest"]] == [far]
    status, body = await stock_api.reserve({"order_id": oid(), "mode": "pickup", "location_id": mid,
                                            "lines": [{"sku_id": SKU, "qty": 2}]})
    assert status == 201
    assert body["allocations"] == [{"location_id": mid, "ownership": "direct", "franchisee_id": None,
                                    "lines": [{"sku_id": SKU, "qty": 2}]}]


async def test_safety_stock_is_kept_for_walk_ins_but_sold_in_store(stock_api):
    store = await stock_api.location(id=f"loc_safe_{uuid.uuid4().hex[:6]}", name="safe", lat=31.23, lng=121.46,
                                     safety_stock=2, ownership="franchise", franchisee_id="frn_test")
    await stock_api.stock_up(store["id"], SKU, 3)
    status, body = await stock_api.reserve(ship(oid(), qty=2))
    assert status == 409 and body["type"].endswith("/sold-out")
    status, body = await stock_api.reserve(ship(oid(), qty=1))
    assert status == 201 and body["allocations"][0]["ownership"] == "franchise"
    assert body["allocations"][0]["franchisee_id"] == "frn_test"
    status, body = await stock_api.reserve({"order_id": oid(), "mode": "in_store", "location_id": store["id"],
                                            "lines": [{"sku_id": SKU, "qty": 2}]})
    assert status == 201
    level = await stock_api.level(store["id"], SKU)
    assert (level["reserved"], level["available"]) == (3, 0)


async def test_stock_given_back_after_a_sell_out_is_sold_again_at_once(stock_api):
    near, _, _ = await three_stores(stock_api, (2, 0, 0))
    first, second = oid(), oid()
    assert (await stock_api.reserve(ship(first)))[0] == 201
    assert (await stock_api.reserve(ship(second)))[0] == 201
    for _ in range(3):  # sold out, and remembered as such
        status, body = await stock_api.reserve(ship(oid()))
        assert status == 409 and body["type"].endswith("/sold-out")
    # A release gives a unit back: the very next buyer gets it.
    await stock_api.call("POST", f"/stock/internal/reservations/{first}/release", stock_api.service)
    status, body = await stock_api.reserve(ship(oid()))
    assert status == 201 and body["allocations"][0]["location_id"] == near
    assert (await stock_api.reserve(ship(oid())))[0] == 409
    # So does a delivery received at a store.
    await stock_api.stock_up(near, SKU, 1)
    assert (await stock_api.reserve(ship(oid())))[0] == 201
    level = await stock_api.level(near, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (3, 3, 0)


async def test_mixed_concurrent_modes_keep_every_invariant(stock_api):
    """Ship, pickup and in-store buyers race over three stores with safety stock: online never takes the
    safety stock, in-store may, nothing goes negative, and the levels equal what the winners were given."""
    stores = []
    for name, lng in (("a", 121.4605), ("b", 121.4815), ("c", 121.5130)):
        loc = await stock_api.location(id=f"loc_mix{name}_{uuid.uuid4().hex[:6]}", name=name, lat=31.23, lng=lng,
                                       daily_capacity=1000, safety_stock=2)
        await stock_api.stock_up(loc["id"], SKU, 10)
        stores.append(loc["id"])
    requests = []
    for i in range(150):
        store = stores[i % 3]
        qty = 1 + (i // 3) % 3
        mode = ("ship", "pickup", "in_store")[i % 5 % 3]
        body = {"order_id": oid(), "mode": mode, "lines": [{"sku_id": SKU, "qty": qty}]}
        body |= {"destination": CUSTOMER} if mode == "ship" else {"location_id": store}
        requests.append(body)
    results = await asyncio.gather(*(stock_api.reserve(body) for body in requests))

    online: dict[str, int] = {s: 0 for s in stores}
    total: dict[str, int] = {s: 0 for s in stores}
    for body, (status, answer) in zip(requests, results):
        assert status in (201, 409), answer
        if status == 409:
            assert answer["type"].endswith("/sold-out")
            continue
        assert sum(l["qty"] for a in answer["allocations"] for l in a["lines"]) == body["lines"][0]["qty"]
        for allocation in answer["allocations"]:
            units = sum(l["qty"] for l in allocation["lines"])
            total[allocation["location_id"]] += units
            if body["mode"] != "in_store":
                online[allocation["location_id"]] += units
    final = {}
    for store in stores:
        level = await stock_api.level(store, SKU)
        assert level["available"] >= 0 and level["available"] == level["on_hand"] - level["reserved"]
        assert level["reserved"] == total[store] <= 10
        assert online[store] <= 10 - 2  # the safety stock never went online
        final[store] = level["available"]
    # A loser was refused only when it truly could not be served: levels only fell during the race, so what
    # refused it then still refuses it now.
    for body, (status, _) in zip(requests, results):
        if status != 409:
            continue
        qty = body["lines"][0]["qty"]
        if body["mode"] == "in_store":
            assert final[body["location_id"]] < qty
        elif body["mode"] == "pickup":
            assert final[body["location_id"]] - 2 < qty
        else:
            assert sum(max(0, available - 2) for available in final.values()) < qty
