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
