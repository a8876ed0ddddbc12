"""Orders asks membership to hold a checkout's coupons and points for the payment window plus the margin (the
same as stock's reservation), so a checkout abandoned with its release lost lets go by itself, and a payment
made at the last moment of the window still finds its hold.

The real orders, stock, catalog and membership over real HTTP (tests/integration/orders/kit.py); the sweep is
driven by calling membership's use case with a later "now", never by waiting."""
from __future__ import annotations

from datetime import datetime

import pytest

from libs.clock import to_ms
from services.membership.usecases import CHECKOUT_HOLDS, MEMBERS
from tests.integration.orders.kit import orders_suite

LIN, JINGAN, TEE = "mbr_demo_lin", "loc_sh_jingan", "sku_tee_classic_whi_s"
# A window unlike membership's default hold (20 min), so the test sees whose ttl was used.
WINDOW_S, MARGIN_S = 45 * 60, 300


@pytest.fixture
async def suite(mongo_url, bus_namespace):
    async with orders_suite(mongo_url, bus_namespace, orders_overrides={
            "payment_window_s": WINDOW_S, "reservation_margin_s": MARGIN_S}) as harness:
        yield harness


async def test_an_abandoned_checkouts_hold_covers_the_payment_window_then_lets_go_by_itself(suite):
    status, coupon, _ = await suite.call("POST", f"/members/{LIN}/coupons", suite.mint.admin(),
                                         service="membership", json={"template_id": "cpt_welcome_20"})
    assert status == 201, coupon
    status, order = await suite.place({"channel": "app", "lines": [{"sku_id": TEE, "qty": 3}],
                                       "fulfilment": {"type": "pickup", "location_id": JINGAN},
                                       "coupon_codes": [coupon["code"]]}, suite.mint.member(LIN))
    assert status == 201 and order["totals"]["discount"] == 2000, order

    membership = suite.apps["membership"]
    repos = membership[MEMBERS]
    hold = await repos.mongo.read_committed(lambda: repos.holds.get(order["id"]))
    payment_deadline_ms = to_ms(datetime.fromisoformat(order["expires_at"].replace("Z", "+00:00")))
    lasts_ms = hold["expires_at_ms"] - hold["created_at_ms"]
    assert (WINDOW_S + MARGIN_S) * 1000 - 60_000 < lasts_ms <= (WINDOW_S + MARGIN_S) * 1000
    assert hold["expires_at_ms"] > payment_deadline_ms  # a payment at the window's last moment finds its hold

    # Orders' own release never comes (its process lost the order, say): the sweep still lets go.
    sweep = membership[CHECKOUT_HOLDS]
    assert await sweep.expire(now=payment_deadline_ms) == 0
    assert await sweep.expire(now=hold["expires_at_ms"]) == 1
    coupon_now = await repos.mongo.read_committed(lambda: repos.coupons.get(coupon["code"]))
    assert coupon_now["state"] == "issued" and coupon_now["order_id"] is None
