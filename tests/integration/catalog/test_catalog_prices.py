"""One price everywhere within a band: channel prices outside it are refused; scheduled changes and history."""
import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import eventually

SKU = "sku_tee_classic_whi_s"  # demo: base 9900, app 9500, mini_program 9500


async def price_of(api, sku_id=SKU):
    status, body = await api.get(f"/catalog/skus/{sku_id}")
    assert status == 200, body
    return body["price"]


async def test_channel_price_outside_the_band_is_refused_with_422_and_nothing_changes(catalog_api, product_body):
    before = await price_of(catalog_api)
    for change in ({"channels": {"app": 9404}},          # 5.01% under 9900
                   {"channels": {"marketplace": 10396}},  # 5.01% over
                   {"base": 12000},                        # app 9500 would be 20.8% under the new base
                   {"channels": {"app": 1}}):
        reply = await catalog_api.hq.post(f"/catalog/skus/{SKU}/price", change)
        status, body = reply
        assert status == 422, (change, body)
        assert body["type"].endswith("/price-out-of-band") and reply.headers["Content-Type"].startswith(
            "application/problem+json")
    assert await price_of(catalog_api) == before
    # At the band's edge it is accepted (inclusive), and the change is recorded and published.
    status, body = await catalog_api.hq.post(f"/catalog/skus/{SKU}/price", {"channels": {"app": 9405, "store": None}})
    assert status == 200, body
    assert body["price"]["channels"]["app"] == 9405 and "store" not in body["price"]["channels"]
    # A product created with an out-of-band channel price is refused whole: no product, no SKU.
    bad = product_body()
    bad["skus"][0]["price"] = {"base": 10000, "channels": {"app": 8000}}
    status, body = await catalog_api.create(bad)
    assert status == 422 and body["type"].endswith("/price-out-of-band")
    assert await catalog_api.db["skus"].count_documents({"barcode": bad["skus"][0]["barcode"]}) == 0


@pytest.mark.parametrize("catalog_api", [{"channel_price_band_pct": 10.0}], indirect=True)
async def test_the_band_is_configurable(catalog_api):
    status, body = await catalog_api.hq.post(f"/catalog/skus/{SKU}/price", {"channels": {"app": 8910}})  # exactly -10%
    assert status == 200, body
    status, body = await catalog_api.hq.post(f"/catalog/skus/{SKU}/price", {"channels": {"app": 8909}})
    assert status == 422


@pytest.mark.parametrize("catalog_api", [{"price_scheduler_interval_s": 0.2}], indirect=True)
async def test_scheduled_price_change_takes_effect_at_its_time_and_is_kept_in_history(catalog_api):
    effective = datetime.now(UTC) + timedelta(seconds=1.5)
    status, schedule = await catalog_api.hq.post(f"/catalog/skus/{SKU}/price", {
        "base": 10400, "channels": {"app": 9900, "mini_program": None}, "effective_at": effective.isoformat()})
    assert status == 202 and schedule["status"] == "pending", schedule
    # Not yet in force: quotes still sell at the current price.
    status, quote = await catalog_api.quote("app", [SKU])
    assert quote["items"][0]["unit_price"] == 9500

    async def in_force():
        status, quote = await catalog_api.quote("app", [SKU])
        return quote["items"][0] if quote["items"][0]["unit_price"] == 9900 else None

    item = await eventually(in_force)
    assert item["base_price"] == 10400
    _, quote = await catalog_api.quote("mini_program", [SKU])
    assert quote["items"][0]["unit_price"] == 10400  # its channel price was dropped: base applies

    async def applied():
        _, overview = await catalog_api.hq.get(f"/catalog/skus/{SKU}/prices")
        return overview if overview["scheduled"][0]["status"] == "applied" else None

    overview = await eventually(applied)
    assert overview["current"] == {"base": 10400, "channels": {"app": 9900, "marketplace": 9900, "store": 9900}}
    last = overview["history"][0]
    assert last["how"] == "scheduled" and last["before"]["base"] == 9900 and last["after"]["base"] == 10400
    outbox = await catalog_api.db["outbox"].find({"type": "catalog.price.changed"}).to_list()
    assert [o["envelope"]["data"]["base"] for o in outbox] == [10400]


async def test_a_scheduled_change_that_would_be_out_of_band_is_refused_up_front(catalog_api):
    effective = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, body = await catalog_api.hq.post(f"/catalog/skus/{SKU}/price", {"base": 20000, "effective_at": effective})
    assert status == 422 and body["type"].endswith("/price-out-of-band")
    status, body = await catalog_api.hq.post(f"/catalog/skus/{SKU}/price",
                                             {"base": 20000, "effective_at": "2030-01-01T00:00:00"})
    assert status == 422  # a time without a zone is ambiguous
    assert await catalog_api.db["price_schedules"].count_documents({}) == 0


async def test_concurrent_price_changes_are_all_recorded_in_order(catalog_api):
    prices = [9800 + i for i in range(10)]
    results = await asyncio.gather(*(catalog_api.hq.post(f"/catalog/skus/{SKU}/price", {"channels": {"store": p}})
                                     for p in prices))
    assert {status for status, _ in results} == {200}
    _, overview = await catalog_api.hq.get(f"/catalog/skus/{SKU}/prices")
    changes = [h for h in overview["history"] if h["how"] == "immediate"]
    assert len(changes) == 10
    # Each change starts from the one before it: no lost update.
    chain = sorted(changes, key=lambda h: h["recorded_at"])
    for earlier, later in zip(chain, chain[1:]):
        assert later["before"] == earlier["after"]
    assert (await price_of(catalog_api))["channels"]["store"] == chain[-1]["after"]["channels"]["store"]


async def test_a_scheduled_change_can_be_cancelled_before_it_is_due(catalog_api):
    effective = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    status, schedule = await catalog_api.hq.post(f"/catalog/skus/{SKU}/price",
                                                 {"base": 9800, "effective_at": effective})
    assert status == 202
    for _ in range(2):  # idempotent
        status, body = await catalog_api.hq.post(f"/catalog/price-schedules/{schedule['id']}/cancel")
        assert status == 200 and body["status"] == "cancelled"
    status, body = await catalog_api.hq.post("/catalog/price-schedules/psc_missing/cancel")
    assert status == 404
    _, overview = await catalog_api.hq.get(f"/catalog/skus/{SKU}/prices")
    assert overview["current"]["base"] == 9900 and overview["scheduled"][0]["status"] == "cancelled"


async def test_a_retried_price_change_with_the_same_idempotency_key_is_applied_once(catalog_api):
    headers = {**catalog_api.admin, "Idempotency-Key": "price-retry-1"}
    answers = [await catalog_api.post(f"/catalog/skus/{SKU}/price", {"channels": {"store": 9700}}, headers=headers)
               for _ in range(3)]
    assert {status for status, _ in answers} == {200}
    assert answers[1].headers.get("Idempotent-Replayed") == "true"
    _, overview = await catalog_api.hq.get(f"/catalog/skus/{SKU}/prices")
    assert len([h for h in overview["history"] if h["how"] == "immediate"]) == 1
    assert await catalog_api.db["outbox"].count_documents({"type": "catalog.price.changed"}) == 1
