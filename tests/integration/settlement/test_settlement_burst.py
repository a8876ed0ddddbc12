"""A burst of orders with duplicated events, published at once: each settles exactly once, to the fen."""
from __future__ import annotations

import asyncio
import random
import time

from tests.support import eventually
from tests.integration.settlement.settlement_kit import new_order_id, order_data

ORDERS = 80
STORES = [("loc_sh_jingan", "direct", None), ("loc_sh_xujiahui", "direct", None),
          ("loc_sh_lujiazui", "franchise", "frn_dongfang"), ("loc_sh_wujiaochang", "franchise", "frn_yangpu")]


async def test_a_burst_of_orders_with_duplicates_settles_each_exactly_once(settlement):
    rng = random.Random(7)
    events, total = [], 0
    for _ in range(ORDERS):
        location_id, ownership, franchisee_id = rng.choice(STORES)
        data = order_data(new_order_id(), channel=rng.choice(["app", "mini_program", "marketplace", "store"]),
                          staff_id=rng.choice([None, "stf_jingan_01", "stf_lujiazui_01"]), fee=rng.randint(0, 200),
                          fulfilment={"type": rng.choice(["ship", "pickup", "in_store"]), "location_id": location_id,
                                      "ownership": ownership, "franchisee_id": franchisee_id},
                          lines=[{"sku_id": f"sku_{n}", "qty": rng.randint(1, 3), "unit_price": rng.randint(990, 39900),
                                  "cost_price": rng.randint(300, 9000), "discount": rng.randint(0, 500)}
                                 for n in range(rng.randint(1, 3))])
        total += data["totals"]["total"]
        # confirmed, completed, and the completed event republished under a new envelope id
        events += [("orders.order.confirmed", data), ("orders.order.completed", data), ("orders.order.completed", data)]
    rng.shuffle(events)
    started = time.perf_counter()
    await asyncio.gather(*(settlement.publish(event_type, data) for event_type, data in events))

    async def settled():
        status, body = await settlement.get("/settlement/accounts")
        balances = {item["id"]: item["balance"] for item in body["items"]}
        # Every capture and every sale posted once: clearing holds all the money, deferred is empty again.
        return balances if balances.get("payment_clearing") == -total and balances.get("deferred_revenue") == 0 \
            else None

    balances = await eventually(settled, timeout=60, interval=0.25)
    elapsed = time.perf_counter() - started
    print(f"\nsettled {ORDERS} orders ({len(events)} events) in {elapsed:.2f}s: {len(events) / elapsed:.0f} events/s")
    parties = {account: balance for account, balance in balances.items()
               if account not in ("payment_clearing", "deferred_revenue")}
    assert sum(parties.values()) == total
    status, body = await settlement.text("/metrics", headers={})
    assert "o2o_settlement_postings_total" in body
