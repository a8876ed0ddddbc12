"""Replaying POST /orders with the same Idempotency-Key creates one order; another body gets
422; concurrent duplicates never create a second order."""
from __future__ import annotations

import asyncio

JINGAN, TEE = "loc_sh_jingan", "sku_tee_classic_whi_s"
LIN = "mbr_demo_lin"


def body(qty=1):
    return {"channel": "app", "lines": [{"sku_id": TEE, "qty": qty}],
            "fulfilment": {"type": "pickup", "location_id": JINGAN}}


async def member_orders(suite, headers):
    status, page, _ = await suite.call("GET", "/orders?limit=100", headers)
    assert status == 200, page
    return page["items"]


async def test_same_key_same_body_gives_the_same_order_and_holds_stock_once(suite):
    member = suite.mint.member(LIN)
    before = await suite.level(JINGAN, TEE)
    first_status, first = await suite.place(body(), member, key="checkout-1")
    assert first_status == 201, first
    again_status, again, headers = await suite.call("POST", "/orders", {**member, "Idempotency-Key": "checkout-1"},
                                                     json=body())
    assert again_status == 201 and again["id"] == first["id"]
    assert headers.get("Idempotent-Replayed") == "true"
    assert [o["id"] for o in await member_orders(suite, member)] == [first["id"]]
    assert (await suite.level(JINGAN, TEE))["available"] == before["available"] - 1


async def test_same_key_with_another_body_is_refused_with_422_and_changes_nothing(suite):
    member = suite.mint.member(LIN)
    status, first = await suite.place(body(qty=1), member, key="checkout-2")
    assert status == 201
    level = await suite.level(JINGAN, TEE)
    status, problem = await suite.place(body(qty=2), member, key="checkout-2")
    assert status == 422
    assert problem["type"].endswith("idempotency-key-reused")
    assert len(await member_orders(suite, member)) == 1
    assert (await suite.level(JINGAN, TEE))["available"] == level["available"]


async def test_concurrent_duplicates_create_exactly_one_order(suite):
    member = suite.mint.member(LIN)
    before = await suite.level(JINGAN, TEE)
    answers = await asyncio.gather(*(suite.place(body(), member, key="checkout-3") for _ in range(20)))
    created = {payload["id"] for status, payload in answers if status == 201}
    assert len(created) == 1, answers
    # The others either replayed the stored answer (201, same id) or met the first still running (409).
    assert all(status in (201, 409) for status, _ in answers)
    assert all(p["type"].endswith("idempotency-conflict") for s, p in answers if s == 409)
    assert [o["id"] for o in await member_orders(suite, member)] == list(created)
    assert (await suite.level(JINGAN, TEE))["available"] == before["available"] - 1


async def test_the_key_belongs_to_its_caller(suite):
    """Another member reusing the same key string gets their own order, not the first member's."""
    status, lin_order = await suite.place(body(), suite.mint.member(LIN), key="shared-key")
    assert status == 201
    status, chen_order = await suite.place(body(), suite.mint.member("mbr_demo_chen"), key="shared-key")
    assert status == 201 and chen_order["id"] != lin_order["id"]
    assert chen_order["member_id"] == "mbr_demo_chen"


async def test_a_replayed_payment_answers_the_first_result_and_charges_once(suite):
    member = suite.mint.member(LIN)
    status, order = await suite.place(body(), member)
    assert status == 201
    pay_headers = {**member, "Idempotency-Key": f"pay-{order['id']}"}
    card = {"card_number": "4242424242424242"}
    answers = await asyncio.gather(*(suite.call("POST", f"/orders/{order['id']}/pay", pay_headers, json=card)
                                     for _ in range(5)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses.count(200) >= 1 and set(statuses) <= {200, 409}, statuses
    paid = [payload for status, payload, _ in answers if status == 200]
    assert len({p["payment"]["payment_id"] for p in paid}) == 1
    status, replay, headers = await suite.call("POST", f"/orders/{order['id']}/pay", pay_headers, json=card)
    assert status == 200 and headers.get("Idempotent-Replayed") == "true"
    assert replay["payment"] == paid[0]["payment"]
    _, final = await suite.get(order["id"], member)
    assert [e["status"] for e in final["timeline"]].count("confirmed") == 1


async def plant_checkout(suite, key: str, raw: bytes, *, owner: str | None, age_s: float,
                         heartbeat_until_ms: int | None = None) -> str:
    """A checkout some process started under `key` and never finished: its order is still pending (the key's
    claim is the order itself), as a crash between the claim and the reservation leaves it."""
    import hashlib
    from datetime import UTC, datetime, timedelta

    from services.orders.domain import order as domain
    from services.orders.domain.requests import RequestKey
    from services.orders.usecases import ORDERS
    repo = suite.apps["orders"][ORDERS].repo
    request_key = RequestKey.of(f"{LIN}|POST|/orders|{key}", hashlib.sha256(raw).hexdigest())
    order = domain.new_order(f"ord_planted_{key}", member_id=LIN, channel="app",
                             fulfilment={"type": "pickup", "location_id": JINGAN}, lines=[], requested_lines=[],
                             coupon_codes=[], points=0, attribution={}, created_by=f"member:{LIN}",
                             now=datetime.now(UTC) - timedelta(seconds=age_s))
    order.update({"saga": {"steps": ["reserve_stock"], "started": ["reserve_stock"]},
                  "checkout_key": request_key.digest, "checkout_request": {"body_hash": request_key.body_hash}})
    if owner is not None:
        order["checkout_owner"] = owner
    mongo = repo.mongo
    await repo.insert_alone(order, [])
    if heartbeat_until_ms is not None:
        await mongo.transaction(lambda s: mongo.db["process_heartbeats"].insert_one(
            {"_id": owner, "until_ms": heartbeat_until_ms}, session=s))
    return order["_id"]


async def test_a_key_left_in_progress_by_a_dead_process_is_taken_over_by_the_retry(suite):
    """The process serving the first attempt died after claiming the key: the client's retry with the same
    key must not be refused forever (a fresh claim still is: that request may be running). The half-done
    checkout is rejected (what it started undone) and the retry carries the request on."""
    import json

    from libs.idempotency import IN_PROGRESS_STALE_S
    from services.orders.usecases import ORDERS
    member = suite.mint.member(LIN)
    raw = json.dumps(body()).encode()
    headers = {**member, "Content-Type": "application/json"}
    planted = await plant_checkout(suite, "died-long-ago", raw, owner=None, age_s=IN_PROGRESS_STALE_S + 5)
    status, order, _ = await suite.call("POST", "/orders", {**headers, "Idempotency-Key": "died-long-ago"}, data=raw)
    assert status == 201, order
    assert order["id"] != planted
    status, replay, _ = await suite.call("POST", "/orders", {**headers, "Idempotency-Key": "died-long-ago"}, data=raw)
    assert status == 201 and replay["id"] == order["id"]
    stale = await suite.apps["orders"][ORDERS].repo.get_committed(planted)
    assert stale["status"] == "rejected" and "checkout_key" not in stale

    await plant_checkout(suite, "still-running", raw, owner=None, age_s=1)
    status, problem, _ = await suite.call("POST", "/orders", {**headers, "Idempotency-Key": "still-running"}, data=raw)
    assert status == 409 and problem["type"].endswith("idempotency-conflict")


async def test_a_claim_is_taken_over_only_when_its_owner_process_is_known_dead(suite):
    """However old a claim looks, a live owner (its heartbeat fresh) may still be running the request: the
    retry is refused, and one key never makes two orders. A dead owner's claim is taken over at once."""
    import json
    import time

    from services.orders.usecases import ORDERS
    member = suite.mint.member(LIN)
    raw = json.dumps(body()).encode()
    mongo = suite.apps["orders"][ORDERS].mongo
    now_ms = int(time.time() * 1000)

    headers = {**member, "Content-Type": "application/json"}
    await plant_checkout(suite, "slow-but-alive", raw, owner="host:1:alive", age_s=300,
                         heartbeat_until_ms=now_ms + 60_000)
    status, problem, _ = await suite.call("POST", "/orders", {**headers, "Idempotency-Key": "slow-but-alive"}, data=raw)
    assert status == 409 and problem["type"].endswith("idempotency-conflict")

    await plant_checkout(suite, "owner-died", raw, owner="host:2:dead", age_s=1, heartbeat_until_ms=now_ms - 1_000)
    status, order, _ = await suite.call("POST", "/orders", {**headers, "Idempotency-Key": "owner-died"}, data=raw)
    assert status == 201, order
    status, replay, _ = await suite.call("POST", "/orders", {**headers, "Idempotency-Key": "owner-died"}, data=raw)
    assert status == 201 and replay["id"] == order["id"]
    live = await mongo.db["orders"].count_documents({"member_id": LIN, "status": {"$in": ["pending_payment"]}})
    status, listing, _ = await suite.call("GET", "/orders", member)
    assert status == 200 and len([o for o in listing["items"] if o["id"] == order["id"]]) == 1 and live == 1
