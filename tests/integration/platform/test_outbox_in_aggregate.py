"""The outbox in the aggregate: a change to one document carries its events in that document, with no
multi-document transaction; the relay publishes them in order and clears them; group commit lets concurrent
producers share one write. On the real broker and a real MongoDB wire server.
"""
from __future__ import annotations

import asyncio
import uuid
from functools import partial

import pytest
from aiohttp import web
from pymongo.errors import DuplicateKeyError

from libs.bus import Envelope, IntegrationEvent
from libs.mongo import IndexSpec
from libs.outbox import EMBEDDED_PENDING, embedded_outbox_index
from libs.service import MONGO, OUTBOX, RELAY, create_service_app
from libs.settings import ServiceSettings
from tests.support import EventTap, eventually, running_app, settings_for


class UnitTaken(IntegrationEvent):
    event_type = "embedtest.unit.taken"
    level_id: str
    n: int


class LevelOpened(IntegrationEvent):
    event_type = "embedtest.level.opened"
    level_id: str


class ProducerSettings(ServiceSettings):
    service_name: str = "embedtest_producer"


class ConsumerSettings(ServiceSettings):
    service_name: str = "embedtest_consumer"


async def nothing_pending(app: web.Application) -> bool:
    return await app[MONGO].db["levels"].count_documents({EMBEDDED_PENDING: True}) == 0


async def count(app: web.Application, envelope: Envelope, session) -> None:
    await app[MONGO].db["seen"].update_one({"_id": envelope.id}, {"$inc": {"times": 1}}, upsert=True, session=session)


@pytest.fixture
async def pair(mongo_url, bus_namespace):
    namespace = f"{bus_namespace}{uuid.uuid4().hex[:6]}."
    prefix = f"em{uuid.uuid4().hex[:8]}_"
    producer_settings = settings_for(ProducerSettings, mongo_url, namespace, mongo_db_prefix=prefix)
    consumer_settings = settings_for(ConsumerSettings, mongo_url, namespace, mongo_db_prefix=prefix)
    producer = create_service_app(producer_settings, indexes=[embedded_outbox_index("levels")], routes=[])

    def subscribe(app, bus):
        bus.on(UnitTaken.event_type, partial(count, app))
        bus.on(LevelOpened.event_type, partial(count, app))

    consumer = create_service_app(consumer_settings, indexes=[IndexSpec("seen", [("times", 1)])], routes=[],
                                  subscribe=subscribe)
    async with EventTap(namespace, "embedtest.#") as tap:
        async with running_app(consumer, consumer_settings.port), running_app(producer, producer_settings.port):
            producer[OUTBOX].embed_in("levels")
            yield producer, consumer, tap


async def test_concurrent_inserts_share_writes_and_every_event_is_published_once(pair):
    producer, consumer, tap = pair
    outbox = producer[OUTBOX]
    await asyncio.gather(*(outbox.insert("levels", {"_id": f"lvl-{i}", "available": 3},
                                         [(LevelOpened(level_id=f"lvl-{i}"), f"lvl-{i}")]) for i in range(200)))
    with pytest.raises(DuplicateKeyError):  # the same key again: refused, and no second event
        await outbox.insert("levels", {"_id": "lvl-0", "available": 9}, [(LevelOpened(level_id="lvl-0"), "lvl-0")])
    await eventually(lambda: len(tap.of(LevelOpened.event_type)) == 200, timeout=30)
    async def all_seen() -> bool:
        return await consumer[MONGO].db["seen"].count_documents({}) == 200

    await eventually(all_seen, timeout=30)
    levels = producer[MONGO].db["levels"]
    await eventually(lambda: nothing_pending(producer))
    assert (await levels.find_one({"_id": "lvl-0"}))["available"] == 3
    assert await producer[MONGO].db["outbox"].count_documents({}) == 0  # no separate outbox record was needed


async def test_a_guarded_update_records_its_event_only_when_it_changed_the_document_and_order_is_kept(pair):
    producer, consumer, tap = pair
    outbox = producer[OUTBOX]
    await outbox.insert("levels", {"_id": "hot", "available": 5}, [])

    async def take(n: int):
        return await outbox.update("levels", {"_id": "hot", "available": {"$gte": 1}}, {"$inc": {"available": -1}},
                                   [(UnitTaken(level_id="hot", n=n), "hot")])

    results = await asyncio.gather(*(take(n) for n in range(12)))
    assert sum(r.modified_count for r in results) == 5  # 5 units, 12 buyers: exactly 5 taken
    level = producer[MONGO].db["levels"]
    assert (await level.find_one({"_id": "hot"}))["available"] == 0
    await eventually(lambda: len(tap.of(UnitTaken.event_type)) == 5, timeout=30)
    taken = [e["data"]["n"] for e in tap.of(UnitTaken.event_type)]
    winners = [n for n, r in zip(range(12), results) if r.modified_count]
    assert sorted(taken) == sorted(winners) and len(set(taken)) == 5
    await asyncio.sleep(0)  # nothing else is published for the refused ones
    assert len(tap.of(UnitTaken.event_type)) == 5


async def test_relay_killed_between_publish_and_clear_republishes_and_the_consumer_has_one_effect(pair):
    producer, consumer, tap = pair
    relay = producer[RELAY]
    real_publish = relay.bus.publish
    crashed = []

    async def publish_then_die(envelope, timeout: float = 10.0):
        await real_publish(envelope, timeout)
        if not crashed:
            crashed.append(envelope.id)
            raise RuntimeError("relay killed after publish, before the events were cleared")

    relay.bus.publish = publish_then_die
    try:
        await producer[OUTBOX].insert("levels", {"_id": "crash", "available": 1},
                                      [(LevelOpened(level_id="crash"), "crash")])
        await eventually(lambda: len(tap.of(LevelOpened.event_type, level_id="crash")) == 2, timeout=30)
    finally:
        relay.bus.publish = real_publish
    seen = consumer[MONGO].db["seen"]
    await eventually(lambda: seen.find_one({"_id": crashed[0]}), timeout=30)
    await eventually(lambda: nothing_pending(producer))
    assert (await seen.find_one({"_id": crashed[0]}))["times"] == 1


async def test_an_event_recorded_while_the_relay_publishes_the_document_stays_pending_and_is_published_once(pair):
    producer, consumer, tap = pair
    relay, outbox = producer[RELAY], producer[OUTBOX]
    real_publish = relay.bus.publish
    interleaved = []

    async def publish_while_another_sale_lands(envelope, timeout: float = 10.0):
        await real_publish(envelope, timeout)
        if envelope.data.get("n") == 0 and not interleaved:
            # Between the relay's read and its clear, the same document takes a new event.
            interleaved.append(await outbox.update("levels", {"_id": "busy"}, {"$inc": {"available": -1}},
                                                   [(UnitTaken(level_id="busy", n=1), "busy")]))

    relay.bus.publish = publish_while_another_sale_lands
    try:
        await outbox.insert("levels", {"_id": "busy", "available": 5}, [])
        await outbox.update("levels", {"_id": "busy"}, {"$inc": {"available": -1}},
                            [(UnitTaken(level_id="busy", n=0), "busy")])
        await eventually(lambda: len(tap.of(UnitTaken.event_type, level_id="busy")) >= 2, timeout=30)
        await eventually(lambda: nothing_pending(producer))
    finally:
        relay.bus.publish = real_publish
    assert interleaved and interleaved[0].modified_count == 1
    assert sorted(e["data"]["n"] for e in tap.of(UnitTaken.event_type, level_id="busy")) == [0, 1]
    doc = await producer[MONGO].db["levels"].find_one({"_id": "busy"})
    assert doc["available"] == 3 and not doc.get("outbox")
