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
