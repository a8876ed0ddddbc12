"""Bad input everywhere in catalog: a clear 4xx problem+json, nothing changed, never a 500."""
import pytest

SKU = "sku_tee_classic_whi_s"
GOOD_SKU = {"barcode": "6999999999999", "price": {"base": 1000}}

BAD_PRODUCTS = [
    ("empty name", {"name": "", "category": "tees"}),
    ("unknown category", {"name": "x", "category": "hats"}),
    ("unknown field", {"name": "x", "category": "tees", "colour": "red"}),
    ("status archived at birth", {"name": "x", "category": "tees", "status": "archived"}),
    ("price as float", {"name": "x", "category": "tees", "skus": [{**GOOD_SKU, "price": {"base": 99.5}}]}),
    ("price zero", {"name": "x", "category": "tees", "skus": [{**GOOD_SKU, "price": {"base": 0}}]}),
    ("price as text", {"name": "x", "category": "tees", "skus": [{**GOOD_SKU, "price": {"base": "99"}}]}),
    ("unknown channel", {"name": "x", "category": "tees",
                         "skus": [{**GOOD_SKU, "price": {"base": 1000, "channels": {"tiktok": 1000}}}]}),
    ("duplicate barcodes", {"name": "x", "category": "tees", "skus": [GOOD_SKU, GOOD_SKU]}),
    ("barcode taken", {"name": "x", "category": "tees", "skus": [{**GOOD_SKU, "barcode": "6900000001001"}]}),
    ("sku id taken", {"name": "x", "category": "tees", "skus": [{**GOOD_SKU, "id": SKU}]}),
    ("bad product id", {"id": "../etc", "name": "x", "category": "tees"}),
    ("skus not a list", {"name": "x", "category": "tees", "skus": {"a": 1}}),
    ("active without skus", {"name": "x", "category": "tees", "status": "active"}),
]


@pytest.mark.parametrize("name,body", BAD_PRODUCTS, ids=[b[0] for b in BAD_PRODUCTS])
async def test_bad_products_are_refused_and_nothing_is_created(catalog_api, name, body):
    products, skus = (await catalog_api.db["products"].count_documents({}),
                      await catalog_api.db["skus"].count_documents({}))
    status, problem = await catalog_api.create(body)
    assert 400 <= status < 500 and status in (409, 422), (status, problem)
    assert problem["status"] == status and problem["type"].startswith("https://o2o.example/problems/")
    assert problem["detail"]
    assert (await catalog_api.db["products"].count_documents({}),
            await catalog_api.db["skus"].count_documents({})) == (products, skus)


async def test_malformed_requests_everywhere_are_4xx_problems(catalog_api):
    api = catalog_api
    cases = [
        ("POST", "/catalog/products", api.admin, {"data": b"{"}, 400),
        ("POST", "/catalog/products", api.admin, {"data": b""}, 400),
        ("POST", "/catalog/products", api.admin, {"json": "just a string"}, 422),
        ("PATCH", "/catalog/products/prd_tee_classic", api.admin, {"json": {"category": "hats"}}, 422),
        ("PATCH", "/catalog/products/prd_missing", api.admin, {"json": {"name": "x"}}, 404),
        ("POST", "/catalog/products/prd_tee_classic/status", api.admin, {"json": {"status": "sold"}}, 422),
        ("POST", "/catalog/products/prd_missing/status", api.admin, {"json": {"status": "active"}}, 404),
        ("POST", "/catalog/products/prd_missing/skus", api.admin, {"json": GOOD_SKU}, 404),
        ("POST", f"/catalog/skus/{SKU}/price", api.admin, {"json": {}}, 422),
        ("POST", f"/catalog/skus/{SKU}/price", api.admin, {"json": {"base": -5}}, 422),
        ("POST", f"/catalog/skus/{SKU}/price", api.admin, {"json": {"channels": {"app": 0}}}, 422),
        ("POST", f"/catalog/skus/{SKU}/price", api.admin, {"json": {"base": 9900, "effective_at": "soon"}}, 422),
        ("POST", "/catalog/skus/sku_missing/price", api.admin, {"json": {"base": 9900}}, 404),
        ("GET", "/catalog/skus/sku_missing", None, {}, 404),
        ("GET", "/catalog/products/prd_missing", None, {}, 404),
        ("GET", "/catalog/products?limit=1000", None, {}, 422),
        ("GET", "/catalog/products?status=gone", None, {}, 422),
        ("GET", "/catalog/products?cursor=***", None, {}, 400),
        ("GET", "/catalog/categories/hats", None, {}, 404),
        ("POST", "/catalog/categories", api.admin, {"json": {"id": "tees", "name": "again"}}, 409),
        ("POST", "/catalog/categories", api.admin, {"json": {"id": "Bad Id!", "name": "x"}}, 422),
        ("POST", "/catalog/internal/quote", api.service, {"json": {"channel": "fax", "sku_ids": [SKU]}}, 422),
        ("POST", "/catalog/internal/quote", api.service, {"json": {"channel": "app", "sku_ids": []}}, 422),
        ("POST", "/catalog/internal/quote", None, {"json": {"channel": "app", "sku_ids": [SKU]}}, 401),
    ]
    for method, path, headers, kw, expected in cases:
        reply = await api.call(method, path, headers=headers, **kw)
        status, body = reply
        assert status == expected, (method, path, kw, status, body)
        assert reply.headers["Content-Type"].startswith("application/problem+json"), path
        assert body["status"] == expected and body["title"] and body["detail"]
    status, product = await api.get("/catalog/products/prd_tee_classic")
    assert product["category"] == "tees" and product["status"] == "active"
    assert (await api.get(f"/catalog/skus/{SKU}")).body["price"]["base"] == 9900
