"""Demo loading is idempotent: a restart on the same database keeps what HQ changed since."""
import uuid

import aiohttp

from services.catalog.app import create_app
from tests.support import ApiClient, serve

SKU = "sku_jeans_slim_ind_32"


async def test_restart_reloads_demo_data_without_undoing_changes(catalog_settings, catalog_mint):
    prefix = f"cr{uuid.uuid4().hex[:10]}_"
    counts = []
    async with aiohttp.ClientSession() as http:
        for round_ in range(2):
            async with serve(create_app, catalog_settings(prefix),
                             catalog_mint.jwks) as (_, base):
                api = ApiClient(http, base)
                counts.append(len((await api.get("/catalog/products?limit=100")).body["items"]))
                sku = (await api.get(f"/catalog/skus/{SKU}")).body
                if round_ == 0:
                    assert sku["price"]["base"] == 29900
                    changed = await api.post(f"/catalog/skus/{SKU}/price", {"base": 28900},
                                             headers=catalog_mint.admin("stf_hq"))
                    assert changed.status == 200
                else:
                    assert sku["price"]["base"] == 28900  # the reload did not put the demo price back
    assert counts[0] == counts[1] == 7
