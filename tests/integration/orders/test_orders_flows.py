"""The order flows against the real stock service (and catalog / membership), over real HTTP."""
from __future__ import annotations

from libs.testing import eventually

JINGAN, XUJIAHUI = "loc_sh_jingan", "loc_sh_xujiahui"
TEE = "sku_tee_classic_whi_s"  # app price 9500, base 9900; 6 on hand at Jing'an
LIN = "mbr_demo_lin"


def pickup_order(sku=TEE, qty=1, store=JINGAN, **extra):
    return {"channel": "app", "lines": [{"sku_id": sku, "qty": qty}],
            "fulfilment": {"type": "pickup", "location_id": store}, **extra}


async def test_pickup_flow_reserves_pays_hands_over_and_commits_stock(suite):
    member, staff = suite.mint.member(LIN), suite.mint.staff(JINGAN)
    before = await suite.level(JINGAN, TEE)
    status, order = await suite.place(pickup_order(qty=2), member)
    assert status == 201, order
    assert order["status"] == "pending_payment"
    assert order["totals"] == {"subtotal": 19000, "discount": 0, "points_discount": 0, "total": 19000}
    assert order["fulfilment"]["location_id"] == JINGAN and order["fulfilment"]["ownership"] == "direct"
    held = await suite.level(JINGAN, TEE)
    assert held["available"] == before["available"] - 2

    status, paid = await suite.pay(order["id"], member)
    assert status == 200, paid
    assert paid["status"] == "confirmed" and paid["payment"]["amount"] == 19000

    status, ready = (await suite.call("POST", f"/orders/{order['id']}/ready-for-pickup", staff))[:2]
    assert status == 200, ready
    code = ready["dev_pickup_code"]
    status, done = (await suite.call("POST", f"/orders/{order['id']}/pickup", staff, json={"code": code}))[:2]
    assert status == 200, done
    assert done["status"] == "completed"
    assert [e["status"] for e in done["timeline"] if "event" not in e] == \
        ["pending_payment", "confirmed", "ready_for_pickup", "picked_up", "completed"]

    async def committed():
        reservation = await suite.reservation(order["id"])
        return reservation and reservation["status"] == "committed"
    await eventually(committed)
    after = await suite.level(JINGAN, TEE)
    assert after["on_hand"] == before["on_hand"] - 2
