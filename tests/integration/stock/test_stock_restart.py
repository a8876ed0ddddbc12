"""A stock restart loses nothing: held reservations survive, the next instance's sweeper releases the expired
ones, demo data reloads without resetting real stock; and franchisees see only their own stores."""
import uuid

import aiohttp

from tests.support import eventually, serve, settings_for
from services.stock.app import create_app
from services.stock.settings import StockSettings

SKU = "sku_tee_classic_whi_s"  # demo: 6 on hand at Jing'an (safety stock 2)


async def test_restart_keeps_reservations_and_stock_and_the_new_instance_sweeps(mongo_url, bus_namespace, token_mint):
    prefix = f"rs{uuid.uuid4().hex[:10]}_"

    def instance(**overrides):
        settings = settings_for(StockSettings, mongo_url, bus_namespace, mongo_db_prefix=prefix, demo_data=True,
                                **overrides)
        return serve(create_app, settings, token_mint.jwks)

    service, admin = token_mint.service("orders", "stock"), token_mint.admin("stf_hq")

    order = f"ord_{uuid.uuid4().hex[:10]}"
    async with aiohttp.ClientSession() as http:
        # First instance: its sweeper is too slow to act before it stops.
        async with instance(sweeper_interval_s=3600) as (_, base):
            async with http.post(base + "/stock/movements", headers=admin, json={
                    "kind": "receive", "key": f"k-{order}", "location_id": "loc_sh_jingan", "sku_id": SKU,
                    "qty": 4}) as response:
                assert response.status == 201
            async with http.post(base + "/stock/internal/reservations", headers=service, json={
                    "order_id": order, "mode": "pickup", "location_id": "loc_sh_jingan", "ttl_s": 1,
                    "lines": [{"sku_id": SKU, "qty": 3}]}) as response:
                assert response.status == 201

        # Second instance on the same database: demo reload must not reset the level, and its sweeper
        # releases what the first one left held.
        async with instance(sweeper_interval_s=0.2) as (_, base):
            async def released():
                async with http.get(f"{base}/stock/internal/reservations/{order}", headers=service) as response:
                    return (await response.json())["status"] == "released"

            await eventually(released, timeout=20)
            async with http.get(f"{base}/stock/levels?location_id=loc_sh_jingan&sku_id={SKU}",
                                headers=admin) as response:
                level = (await response.json())["items"][0]
            assert (level["on_hand"], level["reserved"], level["available"]) == (10, 0, 10)

            # A franchisee reads the levels of the stores it runs, and nothing else.
            franchisee = token_mint.bearer(token_mint.token("frn_dongfang", ["franchisee"],
                                                            franchisee_id="frn_dongfang"))
            async with http.get(f"{base}/stock/levels?limit=200", headers=franchisee) as response:
                assert response.status == 200
                stores = {item["location_id"] for item in (await response.json())["items"]}
            assert stores == {"loc_sh_lujiazui"}
            async with http.get(f"{base}/stock/levels?location_id=loc_sh_jingan", headers=franchisee) as response:
                assert response.status == 404
