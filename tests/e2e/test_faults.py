"""Faults under load, on a suite of its own (started by the same code as `make run`).

1. kill -9 each service in turn in the middle of a stream of checkouts, restart it;
2. restart RabbitMQ while orders flow.
After recovery every order is consistent (confirmed with its reservation, or cancelled/rejected with
nothing held), no event is lost or applied twice (one capture posting per paid order), nothing is stuck
in an outbox, and the dead-letter queues hold only the poison message planted.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import aio_pika
import aiohttp
import pytest

from libs.bus import Names
from tests.support import AMQP_URL, delete_bus_namespace, eventually, free_port, new_namespace
from tests.e2e.client import Api, level, new_phone
from tests.e2e.conftest import SERVICES, Suite

SKU = "sku_tee_classic_whi_l"
STORE = "loc_sh_xujiahui"
DOMAIN = ("catalog", "stock", "orders", "membership", "notifications", "settlement")
SETTLED = ("confirmed", "cancelled", "rejected")


@pytest.fixture(scope="module")
def fault_suite():
    state = Path(tempfile.mkdtemp(prefix="o2o-faults-"))
    namespace = new_namespace()
    suite = Suite(state_dir=state, ports={s: free_port() for s in SERVICES},
                  mongo_url=os.environ.get("TEST_MONGO_URL") or None, nx_port=free_port(),
                  bus_namespace=namespace, db_prefix="o2o" + namespace.replace(".", "_"),
                  extra_env={"O2O_BUS_RETRY_DELAY_MS": "300", "O2O_OUTBOX_POLL_INTERVAL_S": "0.2",
                             "GATEWAY_TRUSTED_PROXIES": '["127.0.0.1/32"]', "GATEWAY_BREAKER_OPEN_S": "1"})
    suite.start()
    yield suite
    suite.stop()
    asyncio.run(delete_bus_namespace(namespace))
    shutil.rmtree(state, ignore_errors=True)


async def persist(api: Api, method: str, path: str, body=None, key: str | None = None, deadline_s: float = 90):
    """What a client app does: retry a call that failed for a server-side reason, same Idempotency-Key."""
    key = key or uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        try:
            reply = await api.call(method, path, body, idempotency_key=key)
            if reply.status < 500 and not (reply.status == 409 and "idempotency-conflict" in str(reply.body)):
                return reply
        except (aiohttp.ClientError, asyncio.TimeoutError):
            pass
        if loop.time() > end:
            raise AssertionError(f"{method} {path} never succeeded")
        await asyncio.sleep(0.3)


async def checkout_stream(members: list[Api], count: int, progress: list) -> list[str]:
    order_ids: list[str] = []
    body = {"channel": "app", "lines": [{"sku_id": SKU, "qty": 1}],
            "fulfilment": {"type": "pickup", "location_id": STORE}, "coupon_codes": [], "points": 0}

    async def one(i: int):
        member = members[i % len(members)]
        created = await persist(member, "POST", "/orders", body)
        if created.status != 201:
            progress.append(("refused", created.status))
            return
        order_ids.append(created.body["id"])
        await persist(member, "POST", f"/orders/{created.body['id']}/pay", {"card_number": "4242424242424242"})
        progress.append(("done", created.body["id"]))

    semaphore = asyncio.Semaphore(4)

    async def paced(i: int):
        async with semaphore:
            await one(i)

    await asyncio.gather(*(paced(i) for i in range(count)))
    return order_ids


async def settle_leftovers(members: list[Api], admin: Api, order_ids: list[str]) -> dict[str, dict]:
    """Cancel what a client gave up paying for, then wait until every order is in a settled state."""
    final = {}
    for order_id in order_ids:
        reply = await persist(admin, "GET", f"/orders/{order_id}")
        if reply.body["status"] == "pending_payment":
            await persist(admin, "POST", f"/orders/{order_id}/cancel", {"reason": "abandoned"})

        async def settled(order_id=order_id):
            reply = await persist(admin, "GET", f"/orders/{order_id}")
            return reply.body if reply.body["status"] in SETTLED else None
        final[order_id] = await eventually(settled, timeout=60)
    return final


async def assert_consistent(suite: Suite, admin: Api, final: dict[str, dict], start_reserved: int) -> None:
    confirmed = [o for o in final.values() if o["status"] == "confirmed"]
    assert confirmed, "no order got through at all"

    async def reservation_matches():
        return (await level(admin, STORE, SKU))["reserved"] == start_reserved + len(confirmed)
    await eventually(reservation_matches, timeout=60)

    for order in final.values():  # one capture per paid order, whatever was redelivered; none for the others
        async def captures(order=order):
            reply = await persist(admin, "GET", f"/settlement/orders/{order['id']}/postings")
            found = [p for p in reply.body["items"] if p["kind"] == "capture"]
            return found if (len(found) == 1) == (order["status"] == "confirmed") else None
        await eventually(captures, timeout=60)

    async with aiohttp.ClientSession() as http:
        async def outboxes_empty():
            for service in DOMAIN:
                async with http.get(suite.url(service) + "/metrics") as response:
                    text = await response.text()
                for line in text.splitlines():
                    if line.startswith("o2o_outbox_backlog{") and not line.endswith(" 0.0"):
                        return False
            return True
        await eventually(outboxes_empty, timeout=60)


async def queue_depths(namespace: str, kind: str) -> dict[str, tuple[int, int]]:
    names = Names(namespace)
    connection = await aio_pika.connect(AMQP_URL)
    depths = {}
    try:
        for service in DOMAIN:
            channel = await connection.channel()
            name = names.dlq(service) if kind == "dlq" else names.queue(service)
            try:
                queue = await channel.declare_queue(name, passive=True)
                depths[service] = (queue.declaration_result.message_count, queue.declaration_result.consumer_count)
            except aio_pika.exceptions.ChannelClosed:
                depths[service] = (-1, -1)
    finally:
        await connection.close()
    return depths


async def plant_poison(namespace: str) -> None:
    """A message notifications cannot read (not an envelope), on a key only notifications consumes."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(Names(namespace).exchange, aio_pika.ExchangeType.TOPIC,
                                                  durable=True, passive=True)
        await exchange.publish(aio_pika.Message(b"{this is not an envelope"), routing_key="settlement.statement.closed")
    finally:
        await connection.close()


async def setup_buyers(suite: Suite, http: aiohttp.ClientSession, received: int) -> tuple[Api, list[Api], int]:
    anonymous = Api(http, suite.url("gateway") + "/api/v1")
    admin = await anonymous.staff_login("hq.admin", "hq-admin-pass")
    await admin.ok("POST", "/stock/movements", {"kind": "receive", "key": f"faults-{uuid.uuid4().hex}",
                                                "location_id": STORE, "sku_id": SKU, "qty": received})
    members = list(await asyncio.gather(*(anonymous.member_login(new_phone()) for _ in range(6))))
    start = await level(admin, STORE, SKU)
    return admin, members, start["reserved"]


async def test_kill_9_each_service_in_turn_mid_stream(fault_suite):
    suite = fault_suite
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        admin, members, start_reserved = await setup_buyers(suite, http, received=100)
        await plant_poison(suite.bus_namespace)
        progress: list = []
        total = 48
        stream = asyncio.create_task(checkout_stream(members, total, progress))
        for n, service in enumerate(DOMAIN, start=1):
            await eventually(lambda n=n: len(progress) >= n * total // (len(DOMAIN) + 2) or stream.done(),
                             timeout=120)
            await asyncio.to_thread(suite.kill, service)           # SIGKILL, no goodbye
            await asyncio.sleep(0.5)
            await asyncio.to_thread(suite.start_service, service)
            await asyncio.to_thread(suite.wait_ready, [service], 60)
        order_ids = await asyncio.wait_for(stream, timeout=300)
        assert order_ids
        final = await settle_leftovers(members, admin, order_ids)
        await assert_consistent(suite, admin, final, start_reserved)

    dlqs = await queue_depths(suite.bus_namespace, "dlq")
    assert dlqs["notifications"][0] == 1, dlqs
    assert all(depth == 0 for service, (depth, _) in dlqs.items() if service != "notifications"), dlqs


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="rabbitmqctl is not installed here")
async def test_broker_restart_under_load(fault_suite):
    suite = fault_suite
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        admin, members, start_reserved = await setup_buyers(suite, http, received=60)
        progress: list = []
        stream = asyncio.create_task(checkout_stream(members, 30, progress))
        await eventually(lambda: len(progress) >= 6 or stream.done(), timeout=120)
        try:
            await asyncio.to_thread(rabbitmqctl, "stop_app")
            await asyncio.sleep(3)
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
        order_ids = await asyncio.wait_for(stream, timeout=300)
        final = await settle_leftovers(members, admin, order_ids)
        await assert_consistent(suite, admin, final, start_reserved)

    async def consumers_back():
        depths = await queue_depths(suite.bus_namespace, "events")
        return all(consumers == 1 for _, consumers in depths.values())
    await eventually(consumers_back, timeout=60)
