"""Flow 6 through the gateway: many buyers race for a few units of one SKU at one store.

Exactly the sellable stock is sold (on hand minus the safety stock kept for walk-in customers), never
more; every loser gets a clean 409 `sold-out`; no order is left half-done; a buyer who double-clicks
gets one order.
"""
from __future__ import annotations

import asyncio
import uuid

from tests.support import eventually
from tests.e2e.client import Api, level, new_phone

SKU = "sku_tee_limited_red_m"
STORE = "loc_sh_jingan"
BUYERS = 120
RECEIVED = 25


async def test_flash_sale_sells_exactly_the_sellable_stock(http, api):
    anonymous = Api(http, api)
    admin = await anonymous.staff_login("hq.admin", "hq-admin-pass")
    await admin.ok("POST", "/stock/movements", {"kind": "receive", "key": f"flash-{uuid.uuid4().hex}",
                                                "location_id": STORE, "sku_id": SKU, "qty": RECEIVED})
    locations = await admin.ok("GET", "/stock/locations")
    safety = next(l for l in locations["items"] if l["id"] == STORE).get("safety_stock", 0)
    start = await level(admin, STORE, SKU)
    sellable = start["available"] - safety
    assert 0 < sellable < BUYERS

    buyers = await asyncio.gather(*(anonymous.member_login(new_phone()) for _ in range(BUYERS)))
    body = {"channel": "app", "lines": [{"sku_id": SKU, "qty": 1}],
            "fulfilment": {"type": "pickup", "location_id": STORE}, "coupon_codes": [], "points": 0}

    async def buy(buyer: Api):
        key = uuid.uuid4().hex
        first = await buyer.call("POST", "/orders", body, idempotency_key=key)
        if first.status != 201:
            return first, None
        paid = await buyer.call("POST", f"/orders/{first.body['id']}/pay", {"card_number": "4242424242424242"})
        return first, paid

    results = await asyncio.gather(*(buy(b) for b in buyers))
    created = [r for r, _ in results if r.status == 201]
    refused = [r for r, _ in results if r.status != 201]
    assert len(created) == sellable, [r.body for r in refused if r.status != 409][:3]
    assert all(r.status == 409 and r.body["type"].endswith("sold-out") for r in refused)
    assert all(r.headers["Content-Type"].startswith("application/problem+json") for r in refused)
    assert all(p is not None and p.status == 200 and p.body["status"] == "confirmed" for _, p in results if p)

    final = await level(admin, STORE, SKU)
    assert final["available"] == safety and final["reserved"] == start["reserved"] + sellable
    assert final["on_hand"] == start["on_hand"]

    # Each winner holds exactly one order.
    winner = next(b for b, (r, _) in zip(buyers, results) if r.status == 201)
    order_id = next(r.body["id"] for b, (r, _) in zip(buyers, results) if b is winner)
    mine = await winner.ok("GET", "/orders?limit=100")
    assert [o["id"] for o in mine["items"]] == [order_id]


async def test_double_click_creates_one_order(http, api):
    anonymous = Api(http, api)
    buyer = await anonymous.member_login(new_phone())
    body = {"channel": "app", "lines": [{"sku_id": "sku_tee_classic_bla_m", "qty": 1}],
            "fulfilment": {"type": "pickup", "location_id": STORE}, "coupon_codes": [], "points": 0}
    key = uuid.uuid4().hex
    first = await buyer.call("POST", "/orders", body, idempotency_key=key)
    assert first.status == 201
    again = await buyer.call("POST", "/orders", body, idempotency_key=key)
    assert again.status == 201 and again.body["id"] == first.body["id"]
    other = await buyer.call("POST", "/orders", {**body, "points": 1}, idempotency_key=key)
    assert other.status == 422
    mine = await buyer.ok("GET", "/orders?limit=100")
    assert [o["id"] for o in mine["items"]] == [first.body["id"]]
    await buyer.ok("POST", f"/orders/{first.body['id']}/cancel", {})
    await eventually(lambda: _cancelled(buyer, first.body["id"]))


async def _cancelled(buyer: Api, order_id: str) -> bool:
    return (await buyer.get(f"/orders/{order_id}")).body["status"] == "cancelled"
