"""Demo loading is idempotent: a restart on the same database keeps what HQ changed since."""
import uuid

import aiohttp

from libs.auth import VERIFIER
from libs.testing import running_app, settings_for
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings

SKU = "sku_jeans_slim_ind_32"


async def test_restart_reloads_demo_data_without_undoing_changes(mongo_url, bus_namespace, catalog_mint):
    prefix = f"cr{uuid.uuid4().hex[:10]}_"
    counts = []
    async with aiohttp.ClientSession() as http:
        for round_ in range(2):
            settings = settings_for(CatalogSettings, mongo_url, bus_namespace, mongo_db_prefix=prefix, demo_data=True)
            app = create_app(settings)
            app[VERIFIER].load_jwks(catalog_mint.jwks)
            admin = {"Authorization": "Bearer " + catalog_mint.token(settings, "stf_hq", ["hq_admin"])}
            async with running_app(app, settings.port) as base:
                async with http.get(f"{base}/catalog/products?limit=100") as response:
                    counts.append(len((await response.json())["items"]))
                async with http.get(f"{base}/catalog/skus/{SKU}") as response:
                    sku = await response.json()
                if round_ == 0:
                    assert sku["price"]["base"] == 29900
                    async with http.post(f"{base}/catalog/skus/{SKU}/price", headers=admin,
                                         json={"base": 28900}) as response:
                        assert response.status == 200
                else:
                    assert sku["price"]["base"] == 28900  # the reload did not put the demo price back
    assert counts[0] == counts[1] == 7
