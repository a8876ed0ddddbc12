"""Bus benchmark: events/s through outbox -> relay -> consumer with inbox, against raw aio-pika rates
measured in the same run on the same broker (confirmed publish one at a time, as the relay does; consume
with manual ack)."""
from __future__ import annotations

import asyncio
import time
import uuid
from functools import partial

import aio_pika
from aiohttp import web

from libs.bus import Envelope, IntegrationEvent
from libs.mongo import IndexSpec
from libs.service import MONGO, OUTBOX, create_service_app
from libs.settings import ServiceSettings
from tests.support import AMQP_URL, running_app, settings_for


class BenchEventRecorded(IntegrationEvent):
    event_type = "bench.event.recorded"
    n: int


class BenchProducerSettings(ServiceSettings):
    service_name: str = "bench_producer"


class BenchConsumerSettings(ServiceSettings):
    service_name: str = "bench_consumer"


async def _count(app: web.Application, envelope: Envelope, session) -> None:
    await app[MONGO].db["seen"].insert_one({"_id": envelope.data["n"]}, session=session)


async def raw_rates(n: int, namespace: str) -> dict:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(f"{namespace}raw", aio_pika.ExchangeType.TOPIC, auto_delete=True)
        queue = await channel.declare_queue(f"{namespace}raw.q", durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(exchange, "raw.#")
        body = Envelope(type="raw.x", source="bench", subject="s", data={"n": 0}).model_dump_json().encode()
        started = time.perf_counter()
        for i in range(n):
            await exchange.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                   routing_key="raw.x", mandatory=True)
        publish_rate = n / (time.perf_counter() - started)

        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=32)
        q = await consume_channel.declare_queue(f"{namespace}raw.q", passive=True)
        done = asyncio.Event()
        seen = 0

        async def on_message(message):
            nonlocal seen
            await message.ack()
            seen += 1
            if seen >= n:
                done.set()

        started = time.perf_counter()
        tag = await q.consume(on_message)
        await asyncio.wait_for(done.wait(), timeout=300)
        consume_rate = n / (time.perf_counter() - started)
        await q.cancel(tag)
        await channel.queue_delete(f"{namespace}raw.q")
        return {"raw_publish_per_s": round(publish_rate, 1), "raw_consume_per_s": round(consume_rate, 1)}
    finally:
        await connection.close()


async def pipeline_rate(n: int, mongo_url: str, namespace: str) -> dict:
    producer_settings = settings_for(BenchProducerSettings, mongo_url, namespace, outbox_poll_interval_s=0.05)
    consumer_settings = settings_for(BenchConsumerSettings, mongo_url, namespace)
    producer = create_service_app(producer_settings, indexes=[], routes=[])

    def subscribe(app, bus):
        bus.on(BenchEventRecorded.event_type, partial(_count, app))

    consumer = create_service_app(consumer_settings, indexes=[IndexSpec("seen", [("x", 1)])], routes=[],
                                  subscribe=subscribe)
    async with running_app(consumer, consumer_settings.port), running_app(producer, producer_settings.port):
        mongo, outbox = producer[MONGO], producer[OUTBOX]
        seen = consumer[MONGO].db["seen"]
        started = time.perf_counter()
        for i in range(n):
            async def unit(session, i=i):
                await mongo.db["state"].insert_one({"_id": i}, session=session)
                await outbox.record(session, BenchEventRecorded(n=i), subject=str(i))
            await mongo.transaction(unit)
        recorded = time.perf_counter() - started
        while await seen.count_documents({}) < n:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    return {"events": n, "pipeline_per_s": round(n / elapsed, 1), "record_only_per_s": round(n / recorded, 1)}


async def run(mongo_url: str, namespace: str, n: int = 2000) -> dict:
    raw = await raw_rates(n, namespace)
    pipeline = await pipeline_rate(n, mongo_url, namespace + uuid.uuid4().hex[:4] + ".")
    result = {**raw, **pipeline}
    result["ratio_vs_raw_publish"] = round(pipeline["pipeline_per_s"] / raw["raw_publish_per_s"], 3)
    result["ratio_vs_raw_consume"] = round(pipeline["pipeline_per_s"] / raw["raw_consume_per_s"], 3)
    return result
