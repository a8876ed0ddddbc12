"""End to end on the real services: orders (with stock, catalog, membership) sells at a franchise store,
settlement splits the sale from orders' own events, and a return at another store reverses exactly its share."""
from __future__ import annotations

import json
import uuid
from fractions import Fraction
from pathlib import Path

import aiohttp

from services.settlement.app import create_app
from services.settlement.settings import SettlementSettings
from tests.integration.orders.kit import orders_suite
from tests.support import ApiClient, delete_bus_namespace, eventually, serve, settings_for

LUJIAZUI, XUJIAHUI, TEE, CHEN = "loc_sh_lujiazui", "loc_sh_xujiahui", "sku_tee_classic_whi_s", "mbr_demo_chen"
DATASET = json.loads((Path(__file__).resolve().parents[3] / "deploy" / "demo" / "dataset.json").read_text())
TEE_COST = next(sku["cost_price"] for product in DATASET["products"] for sku in product["skus"] if sku["id"] == TEE)


def shares_of(posting: dict) -> dict[str, int]:
    shares: dict[str, int] = {}
    for entry in posting["entries"]:
        shares[entry["account"]] = shares.get(entry["account"], 0) + entry["credit"] - entry["debit"]
    return shares


async def test_a_franchise_pickup_sold_and_partly_returned_through_orders_settles_to_the_fen(mongo_url, bus_namespace):
    namespace = f"{bus_namespace}e2e{uuid.uuid4().hex[:6]}."
    try:
        async with orders_suite(mongo_url, namespace) as suite:
            settings = settings_for(SettlementSettings, mongo_url, namespace, demo_data=True,
                                    mongo_db_prefix=f"o2o_stle2e{uuid.uuid4().hex[:6]}_")
            async with serve(create_app, settings, suite.mint.jwks) as (_, settlement_url), \
                    aiohttp.ClientSession() as http:
                settlement = ApiClient(http, settlement_url, suite.mint.admin())

                async def postings(order_id: str) -> list[dict]:
                    status, body = await settlement.get(f"/settlement/orders/{order_id}/postings")
                    assert status == 200, body
                    return body["items"]

                # Chen (bound to Lujiazui's assistant) buys two tees for pickup at Lujiazui, a franchise store.
                member, staff = suite.mint.member(CHEN), suite.mint.staff(LUJIAZUI, staff_id="stf_lujiazui_01")
                status, order = await suite.place({"channel": "app", "lines": [{"sku_id": TEE, "qty": 2}],
                                                   "fulfilment": {"type": "pickup", "location_id": LUJIAZUI}}, member)
                assert status == 201, order
                status, paid = await suite.pay(order["id"], member)
                assert status == 200, paid
                status, ready, _ = await suite.call("POST", f"/orders/{order['id']}/ready-for-pickup", staff)
                assert status == 200, ready
                status, done, _ = await suite.call("POST", f"/orders/{order['id']}/pickup", staff,
                                                   json={"code": ready["dev_pickup_code"]})
                assert status == 200 and done["status"] == "completed", done

                async def sale_posted():
                    found = await postings(order["id"])
                    return found if sorted(p["kind"] for p in found) == ["capture", "sale"] else None
                found = await eventually(sale_posted, timeout=30)
                sale = next(p for p in found if p["kind"] == "sale")

                # Expected from orders' own figures and the catalogue's cost price, with rule v1: franchisee =
                # net - cost x qty x 1.1, assistant 3%, the provider's fee as orders charged it, HQ the rest.
                net, fee = done["totals"]["total"], paid["payment"]["fee"]
                franchisee = net - int(Fraction(TEE_COST * 2 * 11, 10))
                assistant = net * 3 // 100
                expected = {"deferred_revenue": -net, "franchisee:frn_dongfang": franchisee,
                            "staff:stf_lujiazui_01": assistant, f"provider:{paid['payment']['provider']}": fee,
                            "hq": net - franchisee - assistant - fee}
                assert shares_of(sale) == expected

                # One tee comes back at Xujiahui: orders refunds it and settlement reverses exactly its share.
                status, answer, _ = await suite.call("POST", f"/orders/{order['id']}/returns", member,
                                                     json={"lines": [{"sku_id": TEE, "qty": 1}], "reason": "size"})
                assert status == 201, answer
                ret = answer["return"]
                # Another store than the seller: its manager, with the return code from the member's app.
                status, code, _ = await suite.call("POST", f"/orders/{order['id']}/return-code", member)
                assert status == 200, code
                status, received, _ = await suite.call(
                    "POST", f"/orders/{order['id']}/returns/{ret['id']}/receive",
                    suite.mint.staff(XUJIAHUI, role="store_manager"),
                    json={"location_id": XUJIAHUI, "proof": {"return_code": code["return_code"]}})
                assert status == 200, received

                async def refund_posted():
                    found = await postings(order["id"])
                    return found if sorted(p["kind"] for p in found) == ["capture", "refund", "sale"] else None
                found = await eventually(refund_posted, timeout=30)
                refund = next(p for p in found if p["kind"] == "refund")
                assert refund["amount_difference"] == 0 and refund["refund_amount"] == ret["refund_amount"]
                reversed_shares = {account: -amount for account, amount in shares_of(refund).items()
                                   if account != "payment_clearing"}
                # Two identical units: the first returned unit takes back half of each share (rounded down,
                # the leftover fen by the largest remainder), and the refund is exactly that.
                assert sum(reversed_shares.values()) == ret["refund_amount"] == net // 2
                for account, amount in reversed_shares.items():
                    assert abs(amount - Fraction(expected[account], 2)) < 1, account
    finally:
        await delete_bus_namespace(namespace)
