"""The kit's bus on the real broker and a real MongoDB wire server.

Two small services built with the kit: `producer` records an event through the outbox in the same
transaction as its state change; `consumer` applies an effect per event inside the inbox transaction.
"""
from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from functools import partial

import aio_pika
import aiohttp
import pytest
from aiohttp import web

from libs.bus import Envelope, IntegrationEvent
from libs.http import json_response, parse_body
from libs.mongo import IndexSpec
from libs.service import BUS, MONGO, OUTBOX, RELAY, create_service_app
from libs.settings import ServiceSettings
from tests.support import eventually, running_app, settings_for
from pydantic import BaseModel


class ThingRecorded(IntegrationEvent):
    event_type = "platformtest.thing.recorded"
    thing_id: str


class PoisonRecorded(IntegrationEvent):
    event_type = "platformtest.poison.recorded"
    thing_id: str


class NewThing(BaseModel):
    thing_id: str
    poison: bool = False


class ProducerSettings(ServiceSettings):
    service_name: str = "platformtest_producer"


class ConsumerSettings(ServiceSettings):
    service_name: str = "platformtest_consumer"


def producer_app(settings: ServiceSettings) -> web.Application:
    routes = web.RouteTableDef()

    @routes.post("/things")
    async def create(request: web.Request) -> web.Response:
        body = await parse_body(request, NewThing)
        mongo, outbox = request.app[MONGO], request.app[OUTBOX]

        async def unit(session):
            await mongo.db["things"].insert_one({"_id": body.thing_id}, session=session)
            event = PoisonRecorded if body.poison else ThingRecorded
            await outbox.record(session, event(thing_id=body.thing_id), subject=body.thing_id)

        await mongo.transaction(unit)
        return json_response({"id": body.thing_id}, status=201)

    return create_service_app(settings, indexes=[IndexSpec("things", [("x", 1)])], routes=routes)


async def apply_effect(app: web.Application, envelope: Envelope, session) -> None:
    await app[MONGO].db["effects"].update_one({"_id": envelope.data["thing_id"]}, {"$inc": {"count": 1}},
                                              upsert=True, session=session)


async def always_fail(app: web.Application, envelope: Envelope, session) -> None:
    raise RuntimeError(f"cannot digest {envelope.data['thing_id']}")


def consumer_app(settings: ServiceSettings) -> web.Application:
    def subscribe(app: web.Application, bus) -> None:
        bus.on(ThingRecorded.event_type, partial(apply_effect, app))
        bus.on(PoisonRecorded.event_type, partial(always_fail, app))

    return create_service_app(settings, indexes=[IndexSpec("effects", [("count", 1)])], routes=[],
                              subscribe=subscribe)


@pytest.fixture
async def pair(mongo_url, bus_namespace):
    namespace = f"{bus_namespace}{uuid.uuid4().hex[:6]}."
    producer_settings = settings_for(ProducerSettings, mongo_url, namespace)
    consumer_settings = settings_for(ConsumerSettings, mongo_url, namespace, bus_max_attempts=3)
    producer, consumer = producer_app(producer_settings), consumer_app(consumer_settings)
    async with running_app(consumer, consumer_settings.port), running_app(producer, producer_settings.port) as url:
        async with aiohttp.ClientSession() as http:
            yield http, url, producer, consumer, namespace


async def effect_count(consumer: web.Application, thing_id: str) -> int:
    doc = await consumer[MONGO].db["effects"].find_one({"_id": thing_id})
    return doc["count"] if doc else 0


async def test_event_reaches_other_service_once_even_when_relay_dies_between_publish_and_mark(pair):
    http, url, producer, consumer, _ = pair
    relay = producer[RELAY]
    crashed = []

    async def crash_once(doc):
        if not crashed:
            crashed.append(doc["event_id"])
            raise RuntimeError("relay killed after publish, before mark")

    relay.after_publish = crash_once
    async with http.post(f"{url}/things", json={"thing_id": "t-1"}) as response:
        assert response.status == 201

    # The event was published, the mark was lost, and the relay published it again.
    await eventually(lambda: crashed)
    outbox = producer[MONGO].db["outbox"]
    await eventually(lambda: outbox.count_documents({"event_id": crashed[0], "state": "sent"}))
    inbox = consumer[MONGO].db["inbox"]
    await eventually(lambda: inbox.count_documents({"_id": crashed[0]}))
    from libs.metrics import EVENTS_CONSUMED
    duplicates = EVENTS_CONSUMED.labels("platformtest_consumer", ThingRecorded.event_type, "duplicate")
    await eventually(lambda: duplicates._value.get() >= 1)
    assert await effect_count(consumer, "t-1") == 1


async def test_poison_message_ends_in_dlq_with_its_error_while_good_ones_flow(pair):
    http, url, producer, consumer, namespace = pair
    async with http.post(f"{url}/things", json={"thing_id": "bad-1", "poison": True}) as response:
        assert response.status == 201
    for i in range(5):
        async with http.post(f"{url}/things", json={"thing_id": f"good-{i}"}) as response:
            assert response.status == 201
    for i in range(5):
        await eventually(lambda i=i: effect_count(consumer, f"good-{i}"))

    bus = consumer[BUS]
    connection = await aio_pika.connect(bus.settings.amqp_url)
    try:
        channel = await connection.channel()
        dlq = await channel.declare_queue(bus.names.dlq("platformtest_consumer"), passive=True)

        async def dead_lettered():
            return await dlq.get(no_ack=True, fail=False)

        message = await eventually(dead_lettered, timeout=20)
        envelope = Envelope.model_validate_json(message.body)
        assert envelope.data == {"thing_id": "bad-1"}
        assert message.headers["x-attempt"] == 3
        assert "cannot digest bad-1" in message.headers["x-error"]
        assert await effect_count(consumer, "bad-1") == 0
    finally:
        await connection.close()
    for i in range(5):
        assert await effect_count(consumer, f"good-{i}") == 1


def close_connections_named(*names: str) -> int:
    listing = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "client_properties",
                              "--formatter", "json"], capture_output=True, text=True, timeout=30, check=True)
    closed = 0
    for connection in json.loads(listing.stdout or "[]"):
        properties = connection.get("client_properties") or []
        text = json.dumps(properties)
        if any(f'"{name}"' in text for name in names):
            subprocess.run(["rabbitmqctl", "-q", "close_connection", connection["pid"], "test: broker dropped us"],
                           capture_output=True, timeout=30)
            closed += 1
    return closed


async def test_publishing_and_consuming_resume_after_the_broker_drops_every_connection(pair):
    http, url, producer, consumer, _ = pair
    async with http.post(f"{url}/things", json={"thing_id": "before"}) as response:
        assert response.status == 201
    await eventually(lambda: effect_count(consumer, "before"))

    closed = await asyncio.to_thread(close_connections_named, "platformtest_producer", "platformtest_consumer")
    assert closed >= 2
    # State changes keep committing while the broker link is down; their events wait in the outbox.
    for i in range(10):
        async with http.post(f"{url}/things", json={"thing_id": f"during-{i}"}) as response:
            assert response.status == 201

    for i in range(10):
        await eventually(lambda i=i: effect_count(consumer, f"during-{i}"), timeout=30)
    await eventually(lambda: consumer[BUS].connected and producer[BUS].connected, timeout=30)
    assert await eventually(consumer[BUS].consumer_count, timeout=30) == 1
    await eventually(lambda: _no_pending(producer))
    for i in range(10):
        assert await effect_count(consumer, f"during-{i}") == 1


async def _no_pending(producer: web.Application) -> bool:
    return await producer[MONGO].db["outbox"].count_documents({"state": "pending"}) == 0


@pytest.mark.parametrize("method,path,body,headers,status,problem", [
    ("POST", "/things", b"{not json", {}, 400, "malformed-json"),
    ("POST", "/things", b"", {}, 400, "malformed-json"),
    ("POST", "/things", b'{"thing_id": 42}', {}, 422, "validation-error"),
    ("POST", "/things", b'[1, 2]', {}, 422, "validation-error"),
    ("POST", "/things", b'{"thing_id": "x", "poison": "maybe"}', {}, 422, "validation-error"),
    ("GET", "/nowhere", None, {}, 404, "not-found"),
    ("DELETE", "/things", None, {}, 405, "method-not-allowed"),
    ("POST", "/things", b'{"thing_id": "y"}', {"Authorization": "Basic abc"}, 401, "invalid-token"),
    ("POST", "/things", b'{"thing_id": "y"}', {"Authorization": "Bearer not.a.jwt"}, 401, "invalid-token"),
])
async def test_bad_requests_get_problem_json_never_500(pair, method, path, body, headers, status, problem):
    http, url, producer, _, _ = pair
    before = await producer[MONGO].db["things"].count_documents({})
    async with http.request(method, url + path, data=body, headers=headers) as response:
        assert response.status == status
        assert response.headers["Content-Type"].startswith("application/problem+json")
        document = await response.json(content_type=None)
    assert document["type"].endswith("/" + problem)
    assert document["status"] == status and document["title"] and document["detail"]
    assert await producer[MONGO].db["things"].count_documents({}) == before


async def test_request_id_is_kept_or_made(pair):
    http, url, *_ = pair
    async with http.get(url + "/healthz", headers={"X-Request-ID": "req-abc-123"}) as response:
        assert response.headers["X-Request-ID"] == "req-abc-123"
    async with http.get(url + "/healthz") as response:
        assert len(response.headers["X-Request-ID"]) == 32
    async with http.get(url + "/readyz") as response:
        assert response.status == 200
        assert (await response.json())["checks"] == {"mongo": "ok", "broker": "ok"}
    async with http.get(url + "/metrics") as response:
        text = await response.text()
        assert response.headers["Content-Type"].startswith("text/plain")
        assert 'o2o_http_requests_total{method="GET",route="/healthz",service="platformtest_producer",status="200"}' in text


async def test_versioned_replace_detects_a_concurrent_change(pair):
    from libs.mongo import ConcurrencyConflict, insert_versioned, replace_versioned
    _, _, producer, _, _ = pair
    mongo = producer[MONGO]
    things = mongo.db["things"]
    await mongo.transaction(lambda s: insert_versioned(things, {"_id": "v-1", "n": 0}, s))
    first = await things.find_one({"_id": "v-1"})
    stale = dict(first)
    await mongo.transaction(lambda s: replace_versioned(things, {**first, "n": 1}, s))
    with pytest.raises(ConcurrencyConflict):
        await mongo.transaction(lambda s: replace_versioned(things, {**stale, "n": 2}, s), max_attempts=1)
    assert (await things.find_one({"_id": "v-1"}))["n"] == 1
    await mongo.transaction(lambda s: things.insert_one({"_id": "v-2", "n": 0}, session=s))
    legacy = await things.find_one({"_id": "v-2"})
    saved = await mongo.transaction(lambda s: replace_versioned(things, {**legacy, "n": 5}, s))
    assert saved["version"] == 1 and (await things.find_one({"_id": "v-2"}))["n"] == 5
