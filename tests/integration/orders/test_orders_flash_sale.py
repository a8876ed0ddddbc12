"""A flash sale. 2,000 buyers race over real HTTP for 100 units of one SKU: exactly 100
orders are placed and paid, none oversold, every other buyer gets a clean 409 sold-out, and no order is
left half-done (nothing pending, nothing held for a rejected checkout)."""
from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.support import eventually

STORE, SKU = "loc_sh_jingan", "sku_tee_limited_red_m"
BUYERS, UNITS = 2000, 100


async def sellable_units(suite, units: int) -> dict:
    """Top the store up so that exactly `units` can be sold online (safety stock is kept back for walk-ins)."""
    status, location, _ = await suite.call("GET", f"/stock/locations/{STORE}", suite.mint.admin(), service="stock")
    assert status == 200, location
    level = await suite.level(STORE, SKU)
    missing = units + location.get("safety_stock", 0) - level["available"]
    assert missing > 0
    status, moved = await suite.stock_move({"kind": "receive", "location_id": STORE, "sku_id": SKU, "qty": missing,
                                            "key": f"flash-{uuid.uuid4().hex}"})
    assert status == 201, moved
    return await suite.level(STORE, SKU)


@pytest.mark.slow
# 2,000 checkouts at once straight at orders (no gateway in front): nobody is told to come back later.
@pytest.mark.parametrize("suite", [{"payment_window_s": 3600, "upstream_timeout_s": 60,
                                              "stuck_checkout_after_s": 600, "checkout_queue_limit_s": 600}],
                         indirect=True)
async def test_two_thousand_buyers_for_one_hundred_units(suite):
    level_before = await sellable_units(suite, UNITS)
    buyers = [f"mbr_flash_{i:04d}" for i in range(BUYERS)]
    first_buyer = buyers[0]
    headers = {b: suite.mint.member(b) for b in buyers}
    body = {"channel": "app", "lines": [{"sku_id": SKU, "qty": 1}],
            "fulfilment": {"type": "pickup", "location_id": STORE}}

    # Warm up as a running shop would be: token keys fetched, a service token held, prices known.
    status, warm = await suite.place(body, headers[buyers[0]], key=f"flash-{buyers[0]}")
    assert status == 201, warm
    buyers = buyers[1:]

    started = time.perf_counter()
    answers = await asyncio.gather(*(suite.place(body, headers[b], key=f"flash-{b}") for b in buyers))
    checkout_s = time.perf_counter() - started
    winners = [(b, payload) for b, (status, payload) in zip(buyers, answers) if status == 201]
    winners.append((first_buyer, warm))
    losers = [(status, payload) for status, payload in answers if status != 201]
    assert len(winners) == UNITS, f"{len(winners)} placed; statuses: {sorted({s for s, _ in losers})}"
    assert len(losers) == BUYERS - UNITS
    assert all(status == 409 and payload["type"].endswith("sold-out") for status, payload in losers), \
        {(s, p.get("type")) for s, p in losers}

    paid = await asyncio.gather(*(suite.pay(order["id"], headers[b]) for b, order in winners))
    assert [status for status, _ in paid] == [200] * UNITS, {s for s, _ in paid}
    print(f"\nflash sale: {len(buyers)} concurrent checkouts in {checkout_s:.1f}s ({len(buyers) / checkout_s:.0f}/s)")

    level_after = await suite.level(STORE, SKU)
    assert level_after["reserved"] - level_before["reserved"] == UNITS
    assert level_after["available"] == level_before["available"] - UNITS
    assert level_after["on_hand"] == level_before["on_hand"]

    admin = suite.mint.admin()
    for state, expected in (("confirmed", UNITS), ("pending", 0), ("pending_payment", 0)):
        status, page, _ = await suite.call("GET", f"/orders?status={state}&limit=100", admin)
        assert status == 200 and len(page["items"]) == expected, (state, len(page["items"]))
        assert page["next_cursor"] is None
    status, page, _ = await suite.call("GET", "/orders?status=rejected&limit=1", admin)
    assert page["items"][0]["rejection"] == "sold-out"

    # Nothing keeps working on rejected checkouts: no compensation is pending anywhere.
    async def settled():
        return await suite.apps["orders"][ORDERS].repo.find_ids({"has_pending_actions": True}) == []
    await eventually(settled)


from services.orders.usecases import ORDERS  # noqa: E402
