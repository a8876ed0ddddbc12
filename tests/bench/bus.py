"""Bus benchmark: events/s through outbox -> relay -> consumer with inbox, against the broker's raw rates
measured in the same run (the strongest: pipelined confirmed publishing, manual-ack consuming at prefetch 256)."""
from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from functools import partial

import aio_pika
from aiohttp import web

from libs.bus import Envelope, IntegrationEvent
from libs.logging import configure_logging
from libs.mongo import IndexSpec
from libs.outbox import embedded_outbox_index
from libs.service import BUS, MONGO, OUTBOX, create_service_app
from libs.settings import ServiceSettings
from tests.support import AMQP_URL, running_app, settings_for


class BenchEventRecorded(IntegrationEvent):
    event_type = "bench.event.recorded"
    n: int


class BenchProducerSettings(ServiceSettings):
    service_name: str = "bench_producer"


class BenchConsumerSettings(ServiceSettings):
    service_name: str = "bench_consumer"


class Seen:
    """Effects committed by the consumer, counted in memory once their unit of work commits: the bench waits
    on this instead of polling the database it measures (a count every few ms is a full scan on nx)."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()

    def add(self, n: int) -> None:
        self.count += n
        if self.count >= self.target:
            self.reached.set()

    async def wait_for(self, target: int, timeout: float = 300) -> None:
        self.target = target
        if self.count < target:
            self.reached.clear()
            await asyncio.wait_for(self.reached.wait(), timeout)


async def _count_all(app: web.Application, seen: Seen, envelopes: list[Envelope], session) -> None:
    """One write for every event of a delivered batch (the kit's batch handler)."""
    await app[MONGO].db["seen"].insert_many([{"_id": e.data["n"]} for e in envelopes], session=session)
    app[MONGO].after_commit(lambda: seen.add(len(envelopes)))


BODY = Envelope(type="raw.x", source="bench", subject="s", data={"n": 0}).model_dump_json().encode()


async def raw_rates(n: int, namespace: str) -> dict:
    """The broker's own rates on this machine, as the strongest baselines: confirmed publishing one at a time
    and pipelined (batches of 200 in flight, each confirmed), and consuming with manual acks at prefetch 256."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(f"{namespace}raw", aio_pika.ExchangeType.TOPIC, auto_delete=True)
        queue = await channel.declare_queue(f"{namespace}raw.q", durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(exchange, "raw.#")

        def message():
            return aio_pika.Message(BODY, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

        sequential = min(n, 1000)
        started = time.perf_counter()
        for _ in range(sequential):
            await exchange.publish(message(), routing_key="raw.x", mandatory=True)
        sequential_rate = sequential / (time.perf_counter() - started)

        started = time.perf_counter()
        for first in range(0, n, 200):
            await asyncio.gather(*(exchange.publish(message(), routing_key="raw.x", mandatory=True)
                                   for _ in range(min(200, n - first))))
        pipelined_rate = n / (time.perf_counter() - started)

        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=256)
        q = await consume_channel.declare_queue(f"{namespace}raw.q", passive=True)
        total = n + sequential
        done = asyncio.Event()
        seen = 0

        async def on_message(incoming):
            nonlocal seen
            await incoming.ack()
            seen += 1
            if seen >= total:
                done.set()

        started = time.perf_counter()
        tag = await q.consume(on_message)
        await asyncio.wait_for(done.wait(), timeout=300)
        consume_rate = total / (time.perf_counter() - started)
        await q.cancel(tag)
        await channel.queue_delete(f"{namespace}raw.q")
        return {"raw_publish_sequential_per_s": round(sequential_rate, 1),
                "raw_publish_pipelined_per_s": round(pipelined_rate, 1),
                "raw_consume_per_s": round(consume_rate, 1)}
    finally:
        await connection.close()


def _producer(mongo_url: str, namespace: str, prefix: str):
    settings = settings_for(BenchProducerSettings, mongo_url, namespace, mongo_db_prefix=prefix,
                            outbox_poll_interval_s=0.05)
    return create_service_app(settings, indexes=[embedded_outbox_index("state")], routes=[]), settings


def _consumer(mongo_url: str, namespace: str, prefix: str, seen: Seen):
    settings = settings_for(BenchConsumerSettings, mongo_url, namespace, mongo_db_prefix=prefix)

    def subscribe(app, bus):
        bus.on_batch(BenchEventRecorded.event_type, partial(_count_all, app, seen))

    return create_service_app(settings, indexes=[IndexSpec("seen", [("x", 1)])], routes=[],
                              subscribe=subscribe), settings


def _apps(mongo_url: str, namespace: str, seen: Seen):
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    return (*_producer(mongo_url, namespace, prefix), *_consumer(mongo_url, namespace, prefix, seen))


def _consumer_process(mongo_url: str, namespace: str, prefix: str, n: int, conn) -> None:
    """The consuming service in its own process, as deployed: says "ready" once its queue is bound, then
    "done" when `n` effects committed, and stops when told."""
    async def main() -> None:
        configure_logging("bench", "WARNING")
        seen = Seen()
        consumer, settings = _consumer(mongo_url, namespace, prefix, seen)
        async with running_app(consumer, settings.port):
            conn.send("ready")
            await seen.wait_for(n, timeout=600)
            conn.send("done")
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
    asyncio.run(main())


async def pipeline_rate_in_two_processes(n: int, mongo_url: str, namespace: str, producers: int = 16) -> dict:
    """The pipeline as deployed: the producing service (use cases + relay) and the consuming service (inbox +
    handler) are separate processes, so each has a core's worth of Python; the database and the broker are
    shared as in production on one machine."""
    prefix = f"bench{uuid.uuid4().hex[:6]}_"
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_consumer_process, args=(mongo_url, namespace, prefix, n, child), daemon=True)
    process.start()
    loop = asyncio.get_running_loop()
    try:
        if await loop.run_in_executor(None, parent.recv) != "ready":
            raise RuntimeError("the consumer process did not start")
        producer, settings = _producer(mongo_url, namespace, prefix)
        async with running_app(producer, settings.port):
            outbox = producer[OUTBOX]
            outbox.embed_in("state")
            numbers = iter(range(n))

            async def produce():
                for i in numbers:
                    await outbox.insert("state", {"_id": i}, [(BenchEventRecorded(n=i), str(i))])

            started = time.perf_counter()
            await asyncio.gather(*(produce() for _ in range(producers)))
            if await loop.run_in_executor(None, parent.recv) != "done":
                raise RuntimeError("the consumer process did not finish")
            elapsed = time.perf_counter() - started
        parent.send("stop")
        process.join(30)
    finally:
        if process.is_alive():
            process.kill()
    return {"pipeline_two_processes_per_s": round(n / elapsed, 1)}


async def _check_seen(consumer: web.Application, n: int) -> None:
    """After the clock stopped: every event had its effect exactly once."""
    stored = await consumer[MONGO].db["seen"].count_documents({})
    if stored != n:
        raise AssertionError(f"{stored} effects stored for {n} events")


async def pipeline_rate(n: int, mongo_url: str, namespace: str, producers: int = 16) -> dict:
    """Events/s from the producers' writes to the consumer's committed effect: `producers` concurrent use
    cases each change one document with its event embedded (group commit), the relay publishes, the consumer
    handles batches in one unit of work each. Also: the same with the separate transactional outbox."""
    seen = Seen()
    producer, producer_settings, consumer, consumer_settings = _apps(mongo_url, namespace, seen)
    async with running_app(consumer, consumer_settings.port), running_app(producer, producer_settings.port):
        mongo, outbox = producer[MONGO], producer[OUTBOX]
        outbox.embed_in("state")
        numbers = iter(range(n))

        async def produce_embedded():
            for i in numbers:
                await outbox.insert("state", {"_id": i}, [(BenchEventRecorded(n=i), str(i))])

        started = time.perf_counter()
        await asyncio.gather(*(produce_embedded() for _ in range(producers)))
        recorded = time.perf_counter() - started
        await seen.wait_for(n)
        elapsed = time.perf_counter() - started
        await _check_seen(consumer, n)

        # The transactional outbox (a change that spans documents): one transaction per event.
        numbers = iter(range(n, n + n // 2))

        async def produce_transactional():
            for i in numbers:
                async def unit(session, i=i):
                    await mongo.db["state"].insert_one({"_id": i}, session=session)
                    await outbox.record(session, BenchEventRecorded(n=i), subject=str(i))
                await mongo.transaction(unit)

        started = time.perf_counter()
        await asyncio.gather(*(produce_transactional() for _ in range(producers)))
        await seen.wait_for(n + n // 2)
        transactional = (n // 2) / (time.perf_counter() - started)
        await _check_seen(consumer, n + n // 2)
    return {"events": n, "producers": producers, "pipeline_per_s": round(n / elapsed, 1),
            "record_only_per_s": round(n / recorded, 1),
            "pipeline_transactional_outbox_per_s": round(transactional, 1)}


async def consumer_rate(n: int, mongo_url: str, namespace: str) -> dict:
    """The consumer alone: `n` events already queued, handled in batches (inbox and effect in one unit of
    work per batch)."""
    seen = Seen()
    _, _, consumer, consumer_settings = _apps(mongo_url, namespace, seen)
    async with running_app(consumer, consumer_settings.port):
        bus = consumer[BUS]
        await bus.stop_consuming()
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.declare_exchange(bus.names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
            for first in range(0, n, 200):
                await asyncio.gather(*(exchange.publish(aio_pika.Message(Envelope(
                    type=BenchEventRecorded.event_type, source="bench", subject=str(i), data={"n": i}
                ).model_dump_json().encode()), routing_key=BenchEventRecorded.event_type)
                    for i in range(first, min(first + 200, n))))
        finally:
            await connection.close()
        started = time.perf_counter()
        await bus.start_consuming(consumer[MONGO])
        await seen.wait_for(n)
        rate = n / (time.perf_counter() - started)
        await _check_seen(consumer, n)
        return {"consumer_per_s": round(rate, 1)}


async def run(mongo_url: str, namespace: str, n: int = 4000) -> dict:
    configure_logging("bench", "WARNING")  # the bench's own processes must not pay for INFO logs
    raw = await raw_rates(n, namespace)
    pipeline = await pipeline_rate(n, mongo_url, namespace + uuid.uuid4().hex[:4] + ".")
    split = await pipeline_rate_in_two_processes(n, mongo_url, namespace + uuid.uuid4().hex[:4] + ".")
    consumer = await consumer_rate(n, mongo_url, namespace + uuid.uuid4().hex[:4] + ".")
    result = {**raw, **pipeline, **split, **consumer}
    result["ratio_two_processes_vs_raw_publish_pipelined"] = round(
        split["pipeline_two_processes_per_s"] / raw["raw_publish_pipelined_per_s"], 3)
    result["ratio_vs_raw_publish_pipelined"] = round(pipeline["pipeline_per_s"] / raw["raw_publish_pipelined_per_s"], 3)
    result["ratio_vs_raw_publish_sequential"] = round(pipeline["pipeline_per_s"] / raw["raw_publish_sequential_per_s"], 3)
    result["consumer_ratio_vs_raw_consume"] = round(consumer["consumer_per_s"] / raw["raw_consume_per_s"], 3)
    return result
