"""Products over real HTTP: lifecycle, listing, scan lookup, quote contract, idempotent creation, consumer."""
import asyncio
import uuid
from datetime import UTC, datetime

from services.catalog.events import PriceChanged, ProductPublished
from tests.support import EventTap, eventually, publish_raw


async def test_product_lifecycle_draft_active_archived_and_only_active_sells(catalog_api, product_body):
    status, product = await catalog_api.create(product_body(status="draft"))
    assert status == 201 and product["status"] == "draft"
    sku = product["skus"][0]
    assert product["id"].startswith("prd_") and sku["id"].startswith("sku_")
    assert sku["price"] == {"base": 10000, "channels": {"app": 9500}}

    # A draft is invisible to shoppers and does not sell.
    assert (await catalog_api.get(f"/catalog/products/{product['id']}")).status == 404
    status, body = await catalog_api.quote("app", [sku["id"]])
    assert status == 422 and body["type"].endswith("/sku-not-sellable") and body["sku_ids"] == [sku["id"]]

    status, body = await catalog_api.hq.post(f"/catalog/products/{product['id']}/status", {"status": "active"})
    assert status == 200 and body["status"] == "active"
    status, body = await catalog_api.quote("app", [sku["id"]])
    assert status == 200 and body["items"][0]["unit_price"] == 9500
    published = await catalog_api.db["outbox"].find({"type": "catalog.product.published"}).to_list()
    assert [p["envelope"]["data"]["sku_ids"] for p in published if p["envelope"]["subject"] == product["id"]] == [
        [sku["id"]]]

    status, body = await catalog_api.hq.post(f"/catalog/products/{product['id']}/status", {"status": "archived"})
    assert status == 200
    status, body = await catalog_api.hq.post(f"/catalog/products/{product['id']}/status", {"status": "active"})
    assert status == 409 and body["type"].endswith("/illegal-transition")
    assert (await catalog_api.quote("app", [sku["id"]])).status == 422


async def test_quote_contract_channel_price_else_base_and_unknown_skus_named(catalog_api):
    status, body = await catalog_api.quote("app", ["sku_tee_classic_whi_s", "sku_tee_classic_whi_m"])
    assert status == 200
    first, second = body["items"]
    assert {k: first[k] for k in ("sku_id", "product_id", "name", "category", "status", "barcode", "unit_price",
                                  "base_price", "cost_price")} == {
        "sku_id": "sku_tee_classic_whi_s", "product_id": "prd_tee_classic", "name": "Classic Cotton Tee",
        "category": "tees", "status": "active", "barcode": "6900000001001", "unit_price": 9500, "base_price": 9900,
        "cost_price": 4200}
    assert second["unit_price"] == 9900  # no app price of its own: the base
    status, body = await catalog_api.quote("store", ["sku_tee_classic_whi_s", "sku_nope"])
    assert status == 422 and body["sku_ids"] == ["sku_nope"]
    status, body = await catalog_api.hq.post("/catalog/internal/quote",
                                             {"channel": "app", "sku_ids": ["sku_tee_classic_whi_s"]})
    assert status == 403


async def test_scan_in_store_finds_the_sku_its_product_and_price_by_code(catalog_api):
    status, body = await catalog_api.get("/catalog/skus/by-code/6900000001001")
    assert status == 200
    assert body["id"] == "sku_tee_classic_whi_s" and body["sellable"] is True
    assert body["price"] == {"base": 9900, "channels": {"app": 9500, "mini_program": 9500, "marketplace": 9900,
                                                        "store": 9900}}
    assert body["product"]["name"] == "Classic Cotton Tee" and "cost_price" not in body
    reply = await catalog_api.get("/catalog/skus/by-code/0000000000000")
    assert reply.status == 404 and reply.headers["Content-Type"].startswith("application/problem+json")


async def test_listing_filters_by_category_status_and_text_with_cursor_pagination(catalog_api, product_body):
    status, draft = await catalog_api.create(product_body(status="draft", category="jeans"))
    seen, cursor = [], None
    while True:
        path = "/catalog/products?category=jeans&limit=1" + (f"&cursor={cursor}" if cursor else "")
        status, page = await catalog_api.get(path)
        assert status == 200 and len(page["items"]) <= 1
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["prd_jeans_slim", "prd_jeans_wide"]  # the draft is not for shoppers
    _, page = await catalog_api.hq.get("/catalog/products?category=jeans&status=draft")
    assert [p["id"] for p in page["items"]] == [draft["id"]]
    _, page = await catalog_api.get("/catalog/products?category=jeans&status=draft")
    assert page == {"items": [], "next_cursor": None}
    _, page = await catalog_api.get("/catalog/products?q=COTTON")
    assert [p["id"] for p in page["items"]] == ["prd_tee_classic"]
    _, page = await catalog_api.get("/catalog/products?q=.*")
    assert page["items"] == []  # text is matched literally, never as a pattern
    _, page = await catalog_api.get("/catalog/products?limit=100")
    product = next(p for p in page["items"] if p["id"] == "prd_tee_classic")
    assert set(product) >= {"id", "name", "category", "status", "skus"} and len(product["skus"]) == 6
    assert set(product["skus"][0]) >= {"id", "barcode", "attributes", "price"}


async def test_creating_with_the_same_idempotency_key_creates_once(catalog_api, product_body):
    body = product_body()
    headers = {**catalog_api.admin, "Idempotency-Key": f"key-{uuid.uuid4().hex}"}
    results = await asyncio.gather(*(catalog_api.create(body, headers) for _ in range(8)))
    created = [payload for status, payload in results if status == 201]
    assert created and all(p["id"] == created[0]["id"] for p in created)
    assert {status for status, _ in results} <= {201, 409}
    status, again = await catalog_api.create(body, headers)
    assert status == 201 and again == created[0]
    status, problem = await catalog_api.create({**body, "name": "Other"}, headers)
    assert status == 422 and problem["type"].endswith("/idempotency-key-reused")
    assert await catalog_api.db["products"].count_documents({"name": body["name"]}) == 1
    # Without a key, the same barcode twice is a conflict, not a second SKU.
    status, problem = await catalog_api.create(body)
    assert status == 409 and problem["type"].endswith("/barcode-taken")


async def test_admin_writes_need_the_hq_role(catalog_api, product_body):
    staff = catalog_api.bearer("stf_1", ["store_staff"], staff_id="stf_1", store_ids=["loc_sh_jingan"])
    for headers, expected in (({}, 401), (catalog_api.customer, 403), (staff, 403)):
        status, body = await catalog_api.create(product_body(), headers)
        assert status == expected and body["status"] == expected
        status, body = await catalog_api.post("/catalog/skus/sku_tee_classic_whi_s/price", {"base": 9900},
                                              headers=headers)
        assert status == expected
    assert await catalog_api.db["products"].count_documents({"brand": "LOOP", "name": {"$regex": "Hoodie"}}) == 0


async def test_units_sold_are_counted_once_per_order_event_despite_redelivery(catalog_api):
    order_id = f"ord_{uuid.uuid4().hex[:8]}"
    envelope = {"id": str(uuid.uuid4()), "type": "orders.order.placed", "version": 1, "source": "orders",
                "occurred_at": datetime.now(UTC).isoformat(), "subject": order_id, "correlation_id": None,
                "causation_id": None, "data": {"order_id": order_id,
                                               "lines": [{"sku_id": "sku_tee_limited_bla_m", "qty": 2}]}}
    for _ in range(3):
        await publish_raw(catalog_api.settings.bus_namespace, envelope)

    async def counted():
        return await catalog_api.db["inbox"].count_documents({"_id": envelope["id"]}) == 1 and \
            await catalog_api.db["sku_sales"].find_one({"_id": "sku_tee_limited_bla_m"})

    sales = await eventually(counted)
    assert sales["units"] == 2


async def test_publishing_and_price_changes_reach_the_broker(catalog_api, product_body):
    async with EventTap(catalog_api.settings.bus_namespace, "catalog.#") as tap:
        status, product = await catalog_api.create(product_body())
        assert status == 201
        sku_id = product["skus"][0]["id"]
        status, _ = await catalog_api.hq.post(f"/catalog/skus/{sku_id}/price", {"base": 9800})
        assert status == 200
        published = (await tap.wait_for("catalog.product.published", product_id=product["id"]))[0]
        changed = (await tap.wait_for("catalog.price.changed", sku_id=sku_id))[0]
    assert published["subject"] == product["id"] and changed["subject"] == sku_id
    published_data = ProductPublished.model_validate(published["data"])
    assert published_data.sku_ids == [sku_id] and published_data.category == "tees"
    changed_data = PriceChanged.model_validate(changed["data"])
    assert (changed_data.previous_base, changed_data.base, changed_data.channels) == (10000, 9800, {"app": 9500})
    assert changed["source"] == "catalog"
