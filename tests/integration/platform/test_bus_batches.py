"""Batched consumption and retention on the real broker and a real MongoDB wire server.

A delivered batch is one unit of work (one inbox lookup, one insert, the handlers, one commit); a batch that
fails is handled again one message at a time, so a poison message ends alone in the DLQ. Sent outbox events
and inbox ids are purged after the retention window, and inside it a redelivery is still recognised.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from functools import partial

import aio_pika
import pytest
from aiohttp import web

from libs import metrics
from libs.bus import Envelope, Names
from libs.mongo import IndexSpec
from libs.outbox import purge_after_retention
from libs.service import BUS, MONGO, create_service_app
from libs.settings import ServiceSettings
from tests.support import AMQP_URL, eventually, publish_raw, running_app, settings_for

GOOD, POISON, COUNTED = "batchtest.thing.recorded", "batchtest.poison.recorded", "batchtest.tick.recorded"


class BatchConsumerSettings(ServiceSettings):
    service_name: str = "batchtest_consumer"


async def apply_effect(app: web.Application, envelope: Envelope, session) -> None:
    await app[MONGO].db["effects"].update_one({"_id": envelope.data["thing_id"]}, {"$inc": {"count": 1}},
                                              upsert=True, session=session)


async def always_fail(app: web.Application, envelope: Envelope, session) -> None:
    raise RuntimeError(f"cannot digest {envelope.data['thing_id']}")


async def count_ticks(app: web.Application, envelopes: list[Envelope], session) -> None:
    """A batch handler: one write for every tick of the batch."""
    await app[MONGO].db["ticks"].update_one({"_id": "ticks"}, {"$inc": {"n": len(envelopes)}}, upsert=True,
                                            session=session)


def consumer_app(settings: ServiceSettings) -> web.Application:
    def subscribe(app: web.Application, bus) -> None:
        bus.on(GOOD, partial(apply_effect, app))
        bus.on(POISON, partial(always_fail, app))
        bus.on_batch(COUNTED, partial(count_ticks, app))

    return create_service_app(settings, indexes=[IndexSpec("effects", [("count", 1)])], routes=[],
                              subscribe=subscribe)


@pytest.fixture
async def consumer(mongo_url, bus_namespace):
    namespace = f"{bus_namespace}{uuid.uuid4().hex[:6]}."
    settings = settings_for(BatchConsumerSettings, mongo_url, namespace, bus_max_attempts=3,
                            mongo_db_prefix=f"bt{uuid.uuid4().hex[:8]}_")
    app = consumer_app(settings)
    async with running_app(app, settings.port):
        yield app, namespace


def envelope(event_type: str, thing_id: str) -> Envelope:
    return Envelope(type=event_type, source="batchtest_producer", subject=thing_id, data={"thing_id": thing_id})


async def publish_many(namespace: str, envelopes: list[Envelope]) -> None:
    """Pipelined confirmed publishing of a whole batch on one channel (the order is kept)."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(Names(namespace).exchange, aio_pika.ExchangeType.TOPIC,
                                                  durable=True)
        await asyncio.gather(*(exchange.publish(aio_pika.Message(e.model_dump_json().encode(), message_id=e.id),
                                                routing_key=e.type) for e in envelopes))
    finally:
        await connection.close()


async def hold_back_deliveries(bus) -> None:
    """Stop the batch worker (deliveries keep arriving and wait), so the test decides when a batch forms."""
    bus._worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await bus._worker


def release_deliveries(bus) -> None:
    bus._worker = asyncio.create_task(bus._drain())


async def effect_count(app, thing_id: str) -> int:
    doc = await app[MONGO].db["effects"].find_one({"_id": thing_id})
    return doc["count"] if doc else 0


async def test_a_poison_message_in_a_batch_of_100_ends_alone_in_the_dlq_and_the_99_others_take_effect_once(consumer):
    app, namespace = consumer
    bus = app[BUS]
    batches = metrics.CONSUMER_BATCH_SIZE.labels("batchtest_consumer")
    sum_before = batches._sum.get()
    await hold_back_deliveries(bus)
    things = [envelope(POISON if i == 50 else GOOD, f"b-{i}") for i in range(100)]
    await publish_many(namespace, things)
    await eventually(lambda: bus._deliveries.qsize() == 100, timeout=30)
    release_deliveries(bus)

    for i in range(100):
        if i != 50:
            await eventually(lambda i=i: effect_count(app, f"b-{i}"), timeout=30)
    assert batches._sum.get() - sum_before >= 100  # the hundred were tried as one batch first

    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        dlq = await channel.declare_queue(bus.names.dlq("batchtest_consumer"), passive=True)
        message = await eventually(lambda: dlq.get(no_ack=True, fail=False), timeout=30)
        assert Envelope.model_validate_json(message.body).data == {"thing_id": "b-50"}
        assert message.headers["x-attempt"] == 3 and "cannot digest b-50" in message.headers["x-error"]
        assert await dlq.get(no_ack=True, fail=False) is None  # alone
    finally:
        await connection.close()
    for i in range(100):
        assert await effect_count(app, f"b-{i}") == (0 if i == 50 else 1)
    assert await app[MONGO].db["inbox"].count_documents({}) == 99


async def test_a_redelivered_batch_has_no_second_effect_and_batch_handlers_see_each_event_once(consumer):
    app, namespace = consumer
    bus = app[BUS]
    await hold_back_deliveries(bus)
    ticks = [envelope(COUNTED, f"t-{i}") for i in range(40)]
    goods = [envelope(GOOD, f"g-{i}") for i in range(10)]
    await publish_many(namespace, ticks + goods + ticks[:20] + goods[:5])  # the second halves are redeliveries
    await eventually(lambda: bus._deliveries.qsize() == 75, timeout=30)
    duplicates = metrics.EVENTS_CONSUMED.labels("batchtest_consumer", COUNTED, "duplicate")
    before = duplicates._value.get()
    release_deliveries(bus)
    async def all_handled() -> bool:
        return await app[MONGO].db["inbox"].count_documents({}) == 50 and bus._deliveries.empty()

    await eventually(all_handled, timeout=30)
    await eventually(lambda: duplicates._value.get() - before == 20, timeout=30)
    assert (await app[MONGO].db["ticks"].find_one({"_id": "ticks"}))["n"] == 40
    for i in range(10):
        assert await effect_count(app, f"g-{i}") == 1


async def test_retention_purges_old_sent_events_and_inbox_ids_and_keeps_what_is_inside_the_window(consumer):
    app, namespace = consumer
    mongo = app[MONGO]
    hour_ms = 3600 * 1000
    now_ms = int(time.time() * 1000)
    window_h = 24
    await mongo.transaction(lambda s: mongo.db["outbox"].insert_many([
        {"event_id": "old-sent", "state": "sent", "sent_at_ms": now_ms - 25 * hour_ms},
        {"event_id": "new-sent", "state": "sent", "sent_at_ms": now_ms - 23 * hour_ms},
        {"event_id": "old-pending", "state": "pending"},  # never purged, however old
    ], session=s))
    # A real event handled now, and an inbox id handled long ago.
    redelivered = envelope(GOOD, "r-1")
    await publish_raw(namespace, redelivered.model_dump(mode="json"))
    await eventually(lambda: effect_count(app, "r-1"))
    await mongo.transaction(lambda s: mongo.db["inbox"].insert_one(
        {"_id": "ancient", "type": GOOD, "handled_at_ms": now_ms - 30 * hour_ms}, session=s))

    purged = await purge_after_retention(mongo, "batchtest_consumer", window_h, now_ms=now_ms)
    assert purged == {"outbox": 1, "inbox": 1}
    assert {d["event_id"] for d in await mongo.db["outbox"].find({}).to_list()} == {"new-sent", "old-pending"}
    assert await mongo.db["inbox"].find_one({"_id": "ancient"}) is None
    assert await mongo.db["inbox"].find_one({"_id": redelivered.id}) is not None

    # Inside the window the id is still known: a redelivery of that event has no second effect.
    duplicates = metrics.EVENTS_CONSUMED.labels("batchtest_consumer", GOOD, "duplicate")
    before = duplicates._value.get()
    await publish_raw(namespace, redelivered.model_dump(mode="json"))
    await eventually(lambda: duplicates._value.get() > before)
    assert await effect_count(app, "r-1") == 1

    # Past the window it is gone too (a redelivery that late is beyond the broker's horizon).
    later = now_ms + (window_h + 1) * hour_ms
    assert (await purge_after_retention(mongo, "batchtest_consumer", window_h, now_ms=later))["inbox"] == 1
    assert await mongo.db["inbox"].count_documents({}) == 0
