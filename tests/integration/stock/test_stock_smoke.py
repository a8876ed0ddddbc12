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
