"""The flash-sale path on the real service over HTTP: single-location reservations decided by one guarded
`$inc` on the level (no transaction), sold-out edges, sticky releases, and the races that try to break them."""
import asyncio
import uuid

from prometheus_client import REGISTRY

from services.stock.usecases import RECONCILIATION, RESERVATIONS
from tests.support import eventually

SKU = "sku_flash_hoodie"


def oid() -> str:
    return f"ord_{uuid.uuid4().hex[:12]}"


def pickup(store: str, order_id: str, qty: int = 1, sku: str = SKU) -> dict:
    return {"order_id": order_id, "mode": "pickup", "location_id": store, "lines": [{"sku_id": sku, "qty": qty}]}


async def hot_store(api, units: int, sku: str = SKU) -> str:
    store = (await api.location(id=f"loc_hot_{uuid.uuid4().hex[:6]}", name="hot", lat=31.23, lng=121.46))["id"]
    if units:
        await api.stock_up(store, sku, units)
    return store


def metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def release(api, order_id: str, reason: str = "cancelled"):
    status, body, _ = await api.call("POST", f"/stock/internal/reservations/{order_id}/release", api.service,
                                     json={"reason": reason})
    return status, body


async def test_200_concurrent_buyers_of_50_units_at_one_store_get_exactly_50_and_one_exhausted_edge(stock_api,
                                                                                                    event_tap):
    await event_tap.start("stock.sku.#")
    store = await hot_store(stock_api, 50)
    fast_before = metric("o2o_stock_reserve_path_total", path="fast")
    results = await asyncio.gather(*(stock_api.reserve(pickup(store, oid())) for _ in range(200)))
    won = [body for status, body in results if status == 201]
    lost = [(status, body) for status, body in results if status != 201]
    assert len(won) == 50 and len({body["reservation_id"] for body in won}) == 50
    assert all(status == 409 and body["type"].endswith("/sold-out") for status, body in lost), lost[:3]
    level = await stock_api.level(store, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (50, 50, 0)
    assert metric("o2o_stock_reserve_path_total", path="fast") - fast_before == 50
    held = await stock_api.db["reservations"].count_documents({"status": "reserved", "location_id": store})
    assert held == 50
    await eventually(lambda: event_tap.of("stock.sku.exhausted", location_id=store), timeout=20)
    # One edge: the units given back make it available again, once.
    assert (await release(stock_api, won[0]["order_id"]))[0] == 200
    assert (await release(stock_api, won[1]["order_id"]))[0] == 200
    await eventually(lambda: event_tap.of("stock.sku.replenished", location_id=store), timeout=20)
    assert len(event_tap.of("stock.sku.exhausted", location_id=store)) == 1
    assert len(event_tap.of("stock.sku.replenished", location_id=store)) == 1
    status, body = await stock_api.reserve(pickup(store, oid()))  # the given-back unit is sold again at once
    assert status == 201


async def test_a_reservation_replayed_concurrently_holds_once_and_answers_the_first_reservation(stock_api):
    store = await hot_store(stock_api, 5)
    order = oid()
    results = await asyncio.gather(*(stock_api.reserve(pickup(store, order, qty=2)) for _ in range(25)))
    assert {status for status, _ in results} == {201}
    assert len({body["reservation_id"] for _, body in results}) == 1
    level = await stock_api.level(store, SKU)
    assert (level["reserved"], level["available"]) == (2, 3)
    assert await stock_api.db["reservations"].count_documents({"order_id": order}) == 1


async def test_release_first_leaves_a_tombstone_and_the_late_reserve_is_refused_holding_nothing(stock_api):
    store = await hot_store(stock_api, 3)
    order = oid()
    status, body = await release(stock_api, order)  # the compensating release overtook the reserve
    assert status == 200 and body["status"] == "released" and body["allocations"] == []
    status, body = await stock_api.reserve(pickup(store, order))
    assert status == 409 and body["type"].endswith("/reservation-released"), body
    level = await stock_api.level(store, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (3, 0, 3)
    status, body, _ = await stock_api.call("POST", f"/stock/internal/reservations/{order}/commit", stock_api.service)
    assert status == 409 and body["type"].endswith("/reservation-released")
    assert (await release(stock_api, order))[0] == 200  # releasing again is a replay
    # The transactional path (a split ship order) is refused the same way.
    status, body = await stock_api.reserve({"order_id": order, "mode": "ship", "lines": [{"sku_id": SKU, "qty": 1}],
                                            "destination": {"lat": 31.23, "lng": 121.46}})
    assert status == 409 and body["type"].endswith("/reservation-released")
    assert (await stock_api.level(store, SKU))["reserved"] == 0


async def test_release_racing_a_reserve_of_the_same_order_is_refused_or_released_never_held(stock_api):
    store = await hot_store(stock_api, 40)
    orders = [oid() for _ in range(40)]

    async def race(order: str, release_first: bool):
        calls = [stock_api.reserve(pickup(store, order)), release(stock_api, order)]
        if release_first:
            calls.reverse()
        return await asyncio.gather(*calls)

    outcomes = await asyncio.gather(*(race(order, i % 2 == 0) for i, order in enumerate(orders)))
    for order, outcome in zip(orders, outcomes):
        for status, body in outcome:
            assert status in (200, 201, 409), body
            if status == 409:
                assert body["type"].endswith("/reservation-released"), body
        _, doc, _ = await stock_api.call("GET", f"/stock/internal/reservations/{order}", stock_api.service)
        assert doc["status"] == "released", (order, outcome, doc)
    level = await stock_api.level(store, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (40, 0, 40)


async def test_a_later_line_that_cannot_be_held_gives_the_earlier_ones_back(stock_api):
    store = await hot_store(stock_api, 5)
    await stock_api.stock_up(store, "sku_flash_cap", 1)
    status, body = await stock_api.reserve({"order_id": oid(), "mode": "in_store", "location_id": store,
                                            "lines": [{"sku_id": SKU, "qty": 2}, {"sku_id": "sku_flash_cap", "qty": 2}]})
    assert status == 409 and body["type"].endswith("/sold-out")
    assert ((await stock_api.level(store, SKU))["reserved"], (await stock_api.level(store, SKU))["available"]) == (0, 5)
    assert (await stock_api.level(store, "sku_flash_cap"))["reserved"] == 0
    status, body = await stock_api.reserve({"order_id": oid(), "mode": "in_store", "location_id": store,
                                            "lines": [{"sku_id": SKU, "qty": 2}, {"sku_id": "sku_flash_cap", "qty": 1}]})
    assert status == 201 and body["allocations"][0]["lines"] == [{"sku_id": SKU, "qty": 2},
                                                                 {"sku_id": "sku_flash_cap", "qty": 1}]


async def test_sold_out_is_refused_from_memory_after_the_first_refusal(stock_api):
    store = await hot_store(stock_api, 1)
    assert (await stock_api.reserve(pickup(store, oid())))[0] == 201
    assert (await stock_api.reserve(pickup(store, oid())))[0] == 409
    memo_before = metric("o2o_stock_reserve_path_total", path="memo")
    results = await asyncio.gather(*(stock_api.reserve(pickup(store, oid())) for _ in range(30)))
    assert all(status == 409 and body["type"].endswith("/sold-out") for status, body in results)
    assert metric("o2o_stock_reserve_path_total", path="memo") - memo_before == 30
    await stock_api.stock_up(store, SKU, 1)  # given back in this process: the memo is forgotten at once
    assert (await stock_api.reserve(pickup(store, oid())))[0] == 201


async def test_reconciliation_repairs_a_planted_reserved_count_and_reports_it(stock_api):
    store = await hot_store(stock_api, 10)
    for _ in range(3):
        assert (await stock_api.reserve(pickup(store, oid())))[0] == 201
    other = await hot_store(stock_api, 4, sku="sku_flash_sock")
    levels = stock_api.db["levels"]
    # Drift planted directly in the database: 5 units "held" that no reservation holds, and a level that
    # forgot its one open reservation. held_at_ms 0: no fast-path hold is on its way.
    await levels.update_one({"_id": f"{store}:{SKU}"}, {"$set": {"reserved": 8, "available": 2, "held_at_ms": 0}})
    assert (await stock_api.reserve(pickup(other, oid(), sku="sku_flash_sock")))[0] == 201
    await levels.update_one({"_id": f"{other}:sku_flash_sock"}, {"$set": {"reserved": 0, "available": 4,
                                                                          "held_at_ms": 0}})
    over = metric("o2o_stock_reservation_drift_total", kind="over_reserved")
    under = metric("o2o_stock_reservation_drift_total", kind="under_reserved")

    report = await stock_api.app[RECONCILIATION].run()

    assert report["found"] == 2, report
    level = await stock_api.level(store, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (10, 3, 7)
    level = await stock_api.level(other, "sku_flash_sock")
    assert (level["on_hand"], level["reserved"], level["available"]) == (4, 1, 3)
    assert metric("o2o_stock_reservation_drift_total", kind="over_reserved") - over == 1
    assert metric("o2o_stock_reservation_drift_total", kind="under_reserved") - under == 1
    assert metric("o2o_stock_reservation_drift_levels") == 2
    status, ledger, _ = await stock_api.call("GET", f"/stock/movements?location_id={store}&sku_id={SKU}",
                                             stock_api.admin)
    assert status == 200
    repair = ledger["items"][0]
    assert (repair["kind"], repair["reason"], repair["variance"], repair["delta"]) == ("reconciliation",
                                                                                      "reconciliation", 5, 0)
    again = await stock_api.app[RECONCILIATION].run()  # a second run finds nothing
    assert again["found"] == 0 and metric("o2o_stock_reservation_drift_levels") == 0


async def test_reconciliation_leaves_a_level_the_fast_path_just_held(stock_api):
    store = await hot_store(stock_api, 10)
    assert (await stock_api.reserve(pickup(store, oid())))[0] == 201
    # As if a reservation were on its way: the level holds 2, one reservation holds 1, held just now.
    await stock_api.db["levels"].update_one({"_id": f"{store}:{SKU}"}, {"$inc": {"reserved": 1, "available": -1}})
    report = await stock_api.app[RECONCILIATION].run()
    assert report["found"] == 0 and report["deferred"] == 1
    assert (await stock_api.level(store, SKU))["reserved"] == 2


async def test_the_fast_path_publishes_level_low_once_when_available_crosses_the_reorder_point(stock_api,
                                                                                               event_tap):
    await event_tap.start("stock.level_low")
    store = await hot_store(stock_api, 6)  # default reorder point 2
    results = await asyncio.gather(*(stock_api.reserve(pickup(store, oid())) for _ in range(6)))
    assert [status for status, _ in results] == [201] * 6
    await eventually(lambda: event_tap.of("stock.level_low", location_id=store), timeout=20)
    low = event_tap.of("stock.level_low", location_id=store)
    assert len(low) == 1 and low[0]["data"]["available"] == 1
    async def nothing_pending() -> bool:
        return await stock_api.db["levels"].count_documents({"outbox_pending": True}) == 0

    await eventually(nothing_pending, timeout=20)
    assert len(event_tap.of("stock.level_low", location_id=store)) == 1


async def test_a_hold_whose_reservation_never_arrived_is_given_back_by_the_reconciliation(stock_api):
    store = await hot_store(stock_api, 4)
    assert (await stock_api.reserve(pickup(store, oid())))[0] == 201
    # The fast path's take, then a crash before the reservation was written (long enough ago: held_at_ms 0).
    levels = stock_api.app[RESERVATIONS].core.levels
    assert await levels.take(store, SKU, 2, 0, 0) is not None
    assert (await stock_api.level(store, SKU))["reserved"] == 3
    report = await stock_api.app[RECONCILIATION].run()
    assert [(r["kind"], r["reserved_before"], r["reserved"]) for r in report["repaired"]] == [("over_reserved", 3, 1)]
    level = await stock_api.level(store, SKU)
    assert (level["on_hand"], level["reserved"], level["available"]) == (4, 1, 3)
    assert (await stock_api.reserve(pickup(store, oid(), qty=3)))[0] == 201  # the units are sold again
