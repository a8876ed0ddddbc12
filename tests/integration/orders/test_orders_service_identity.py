"""Pickup codes stay off the bus, and service tokens do only what their scopes name.

The attacks: the pickup code rode in `orders.order.ready_for_pickup`, so every consumer, every webhook and the
audit queue saw it; and a service token minted for notifications cancelled an order, because the `service`
role satisfied the checks meant for people.
"""
from __future__ import annotations

from tests.integration.orders.test_orders_flows import JINGAN, LIN, pickup_order
from tests.support import EventTap, eventually


async def ready_order(suite) -> tuple[dict, str]:
    member, staff = suite.mint.member(LIN), suite.mint.staff(JINGAN)
    status, order = await suite.place(pickup_order(), member)
    assert status == 201, order
    assert (await suite.pay(order["id"], member))[0] == 200
    status, ready, _ = await suite.call("POST", f"/orders/{order['id']}/ready-for-pickup", staff)
    assert status == 200, ready
    return order, ready["dev_pickup_code"]


async def test_the_pickup_code_is_not_on_the_bus_and_only_notifications_may_fetch_it(suite, bus_namespace):
    async with EventTap(bus_namespace, "orders.order.ready_for_pickup", "orders.pickup_code.reissued") as tap:
        order, code = await ready_order(suite)
        status, reset, _ = await suite.call("POST", f"/orders/{order['id']}/pickup-code/reset",
                                            suite.mint.staff(JINGAN, role="store_manager"))
        assert status == 200
        new_code = reset["dev_pickup_code"]
        await eventually(lambda: len(tap.events) == 2)
    for event in tap.events:
        assert "pickup_code" not in event["data"] and code not in str(event) and new_code not in str(event), event

    path = f"/orders/internal/orders/{order['id']}/pickup-code"
    status, answer, headers = await suite.call("GET", path, suite.mint.service("notifications", "orders"))
    assert status == 200 and answer == {"order_id": order["id"], "pickup_code": new_code}
    assert headers["Cache-Control"] == "no-store"
    refused = [suite.mint.service("orders", "orders"),                     # no grant of that scope
               suite.mint.service("notifications", "stock"),               # a token for another service
               suite.mint.admin(), suite.mint.staff(JINGAN, role="store_manager"), suite.mint.member(LIN)]
    for headers in refused:
        status, _, _ = await suite.call("GET", path, headers)
        assert status in (401, 403), (headers, status)

    status, _, _ = await suite.call("POST", f"/orders/{order['id']}/pickup", suite.mint.staff(JINGAN),
                                    json={"code": new_code})
    assert status == 200
    status, problem, _ = await suite.call("GET", path, suite.mint.service("notifications", "orders"))
    assert status == 409 and problem["type"].endswith("no-pickup-code")


async def test_a_service_token_cannot_act_as_a_person(suite):
    member = suite.mint.member(LIN)
    status, order = await suite.place(pickup_order(), member)
    assert status == 201
    notifications = suite.mint.service("notifications", "orders")
    status, problem, _ = await suite.call("POST", f"/orders/{order['id']}/cancel", notifications,
                                          json={"reason": "customer_request"})
    assert status == 403, problem
    status, _, _ = await suite.call("GET", f"/orders/{order['id']}", notifications)
    assert status == 403
    status, again = await suite.get(order["id"], member)
    assert again["status"] == "pending_payment"
