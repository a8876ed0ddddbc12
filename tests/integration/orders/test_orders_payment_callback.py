"""A payment callback is believed only for a payment attempt the order really made.

The attack: whoever holds (or guesses) the webhook secret signs a "succeeded" callback for an unpaid order,
with an attempt id of their own or one of another order's, and the order is confirmed without money.
"""
from __future__ import annotations

import json

from services.orders.payments.port import SIGNATURE_HEADER, sign
from services.orders.usecases import ORDERS
from tests.integration.orders.test_orders_flows import LIN, pickup_order

TIMES_OUT = "4000000000000119"  # the sandbox card whose outcome arrives later, by callback


async def post_callback(suite, body: dict) -> tuple[int, dict]:
    raw = json.dumps(body).encode()
    secret = suite.apps["orders"][ORDERS].settings.payment_webhook_secret
    status, answer, _ = await suite.call("POST", "/orders/payments/callback",
                                         {SIGNATURE_HEADER: sign(secret, raw), "Content-Type": "application/json"},
                                         data=raw)
    return status, answer


def succeeded(order: dict, attempt_id: str) -> dict:
    return {"order_id": order["id"], "attempt_id": attempt_id, "status": "succeeded",
            "payment_id": "pay_forged_1", "amount": order["totals"]["total"]}


async def status_of(suite, order_id: str) -> str:
    return (await suite.apps["orders"][ORDERS].repo.get_committed(order_id))["status"]


async def test_a_signed_callback_with_a_made_up_attempt_does_not_pay_an_unpaid_order(suite):
    member = suite.mint.member(LIN)
    status, order = await suite.place(pickup_order(), member)
    assert status == 201

    status, problem = await post_callback(suite, succeeded(order, "pat_made_up"))
    assert status == 409 and problem["type"].endswith("unknown-payment-attempt"), problem
    status, problem = await post_callback(suite, {**succeeded(order, "pat_made_up"), "status": "failed"})
    assert status == 409
    assert await status_of(suite, order["id"]) == "pending_payment"


async def test_another_orders_attempt_does_not_pay_this_order(suite):
    member = suite.mint.member(LIN)
    _, paying = await suite.place(pickup_order(), member)
    _, unpaid = await suite.place(pickup_order(), member)
    status, _ = await suite.pay(paying["id"], member, card=TIMES_OUT)
    assert status == 202
    attempt = (await suite.apps["orders"][ORDERS].repo.get_committed(paying["id"]))["payment_attempt"]["id"]

    status, problem = await post_callback(suite, succeeded(unpaid, attempt))
    assert status == 409 and problem["type"].endswith("unknown-payment-attempt")
    assert await status_of(suite, unpaid["id"]) == "pending_payment"

    # The order's own attempt is still believed.
    status, confirmed = await post_callback(suite, succeeded(paying, attempt))
    assert status == 200 and confirmed["status"] == "confirmed"
