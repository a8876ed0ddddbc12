import pytest


@pytest.mark.parametrize("stock_api", [{"demo_data": True}], indirect=True)
async def test_demo_data_loads_and_availability_answers(stock_api):
    status, body, _ = await stock_api.call("GET", "/stock/locations")
    assert status == 200, body
    assert {item["id"] for item in body["items"]} >= {"loc_sh_jingan", "loc_wh_jiading"}
    status, body, _ = await stock_api.call("GET", "/stock/availability?sku=sku_tee_classic_whi_s&lat=31.22&lng=121.44")
    assert status == 200, body
    print(body)
    assert body["items"]


async def test_openapi_documents_the_public_routes_only(stock_api):
    status, spec, _ = await stock_api.call("GET", "/openapi.json")
    assert status == 200
    assert {"/stock/availability", "/stock/locations", "/stock/movements"} <= set(spec["paths"])
    assert not any("/internal/" in path for path in spec["paths"])


@pytest.mark.parametrize("stock_api", [{"demo_data": True}], indirect=True)
async def test_availability_lists_stores_that_can_serve_now_nearest_first(stock_api):
    # Demo: sku_tee_classic_whi_s at Jing'an 6 (safety 2), Xujiahui 11 (safety 2), Lujiazui 16 (safety 1),
    # Wujiaochang 6 (safety 1), and the Jiading warehouse (not a store: never listed).
    near_xujiahui = "lat=31.1960&lng=121.4380"
    status, body, _ = await stock_api.call("GET", f"/stock/availability?sku=sku_tee_classic_whi_s&{near_xujiahui}")
    assert status == 200
    items = body["items"]
    assert items[0]["location_id"] == "loc_sh_xujiahui"
    assert [i["distance_m"] for i in items] == sorted(i["distance_m"] for i in items)
    assert "loc_wh_jiading" not in {i["location_id"] for i in items}
    levels = {}
    for item in items:
        level = await stock_api.level(item["location_id"], "sku_tee_classic_whi_s")
        location = (await stock_api.call("GET", f"/stock/locations/{item['location_id']}"))[1]
        assert item["available"] == level["available"] - location["safety_stock"] > 0  # online: safety kept
        levels[item["location_id"]] = level["available"]
    status, body, _ = await stock_api.call(
        "GET", f"/stock/availability?sku=sku_tee_classic_whi_s&{near_xujiahui}&mode=in_store")
    assert {i["location_id"]: i["available"] for i in body["items"]} == levels  # walk-ins may buy the safety stock
    status, body, _ = await stock_api.call("GET", f"/stock/availability?sku=sku_nothing_here&{near_xujiahui}")
    assert status == 200 and body["items"] == []


async def test_business_metrics_count_reservations_by_outcome(stock_api):
    import re
    import uuid

    async def counter(outcome: str) -> float:
        async with stock_api.http.get(stock_api.base + "/metrics") as response:
            text = await response.text()
        found = re.search(r'^o2o_stock_reservations_total\{mode="in_store",outcome="%s"\} (\S+)$' % outcome, text,
                          flags=re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    loc = (await stock_api.location(id=f"loc_m_{uuid.uuid4().hex[:6]}", name="m", lat=31.2, lng=121.4))["id"]
    await stock_api.stock_up(loc, "sku_metric_tee", 1)
    before = {o: await counter(o) for o in ("reserved", "rejected", "replayed")}
    body = {"order_id": f"ord_{uuid.uuid4().hex[:8]}", "mode": "in_store", "location_id": loc,
            "lines": [{"sku_id": "sku_metric_tee", "qty": 1}]}
    assert (await stock_api.reserve(body))[0] == 201
    assert (await stock_api.reserve(body))[0] == 201
    assert (await stock_api.reserve({**body, "order_id": f"ord_{uuid.uuid4().hex[:8]}"}))[0] == 409
    after = {o: await counter(o) for o in ("reserved", "rejected", "replayed")}
    assert {o: after[o] - before[o] for o in after} == {"reserved": 1, "rejected": 1, "replayed": 1}


async def test_availability_for_ship_agrees_with_routing_warehouses_in_full_stores_out(stock_api):
    import uuid

    sku = f"sku_ship_{uuid.uuid4().hex[:6]}"
    warehouse = (await stock_api.location(id=f"loc_wh_{uuid.uuid4().hex[:6]}", name="wh", kind="warehouse",
                                          capabilities={"pickup": False, "ship": True}, lat=31.40, lng=121.25))["id"]
    store = (await stock_api.location(id=f"loc_st_{uuid.uuid4().hex[:6]}", name="st", daily_capacity=1,
                                      lat=31.20, lng=121.44))["id"]
    await stock_api.stock_up(warehouse, sku, 50)
    await stock_api.stock_up(store, sku, 5)
    here = "lat=31.2000&lng=121.4400"

    async def listed(mode: str) -> dict:
        status, body, _ = await stock_api.call("GET", f"/stock/availability?sku={sku}&{here}&mode={mode}")
        assert status == 200, body
        return {item["location_id"]: item for item in body["items"]}

    ship = await listed("ship")
    assert ship[warehouse]["kind"] == "warehouse" and ship[warehouse]["available"] == 50
    assert ship[store]["ship_capacity_left"] == 1
    assert list(ship) == [store, warehouse]  # nearest first
    assert warehouse not in await listed("pickup")  # nobody collects at a warehouse

    # The store ships one order today: its capacity is used up, so routing sends the next one elsewhere,
    # and availability says so too.
    status, reservation = await stock_api.reserve({"order_id": f"ord_{uuid.uuid4().hex[:8]}", "mode": "ship",
                                                   "lines": [{"sku_id": sku, "qty": 1}],
                                                   "destination": {"lat": 31.20, "lng": 121.44}})
    assert status == 201, reservation
    assert [a["location_id"] for a in reservation["allocations"]] == [store]
    ship = await listed("ship")
    assert store not in ship and warehouse in ship
    assert store in await listed("pickup")  # pickup does not use the ship capacity
