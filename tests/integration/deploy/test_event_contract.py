"""Events as they really travel: recorded through a service's transactional outbox, relayed over the real
broker, captured from the bus and checked with the contract helper against the committed AsyncAPI document.

Every message of the document is sent this way (its example data, parsed by the publisher's own model), so
the models, the outbox/relay wire format and the document are shown to agree for every event type.
"""
from __future__ import annotations

import json

import pytest
import yaml

from libs.outbox import Outbox
from libs.service import MONGO
from tests.support import eventually, running_app, settings_for
from scripts import asyncapi
from tests.contract import ContractViolation, EventCapture, validate_event

DOCUMENT = yaml.safe_load(asyncapi.DOCUMENT_PATH.read_text())
MESSAGES = DOCUMENT["components"]["messages"]
MODELS = {event.message_id: event for event in asyncapi.discover_events()}


async def test_every_documented_event_relayed_over_the_bus_validates(mongo_url, bus_namespace):
    from services.catalog.app import create_app
    from services.catalog.settings import CatalogSettings

    settings = settings_for(CatalogSettings, mongo_url, bus_namespace)
    app = create_app(settings)
    recorded: dict[str, str] = {}  # envelope id -> message id
    async with EventCapture(bus_namespace) as capture, running_app(app, settings.port):
        mongo = app[MONGO]
        # The running catalog's relay publishes whatever its outbox collection holds; one Outbox per
        # publishing service gives each envelope its real `source`.
        for message_id, message in MESSAGES.items():
            event = MODELS[message_id]
            example = message["examples"][0]["payload"]
            model = event.model.model_validate(example["data"])
            outbox = Outbox(mongo, event.service)

            async def unit(session, outbox=outbox, model=model, subject=example["subject"]):
                return await outbox.record(session, model, subject=subject)

            envelope = await mongo.transaction(unit)
            recorded[envelope.id] = message_id

        await eventually(lambda: recorded.keys() <= {e["id"] for e in capture.events}, timeout=30)

    relayed = [e for e in capture.events if e["id"] in recorded]
    assert {recorded[e["id"]] for e in relayed} == set(MESSAGES)
    seen = capture.assert_valid()
    assert set(seen) == {m["title"] for m in MESSAGES.values()}


async def test_the_capture_reports_every_violation(bus_namespace):
    import aio_pika
    from libs.bus import Names
    from tests.support import AMQP_URL

    good = next(iter(MESSAGES.values()))["examples"][0]["payload"]
    bad = json.loads(json.dumps(good)) | {"id": "not-a-uuid"}
    async with EventCapture(bus_namespace) as capture:
        connection = await aio_pika.connect(AMQP_URL)
        channel = await connection.channel()
        exchange = await channel.get_exchange(Names(bus_namespace).exchange)
        for body in (json.dumps(good).encode(), json.dumps(bad).encode(), b"not json"):
            await exchange.publish(aio_pika.Message(body), routing_key=good["type"])
        await eventually(lambda: len(capture.events) + len(capture.unparsable) == 3)
        await connection.close()
    with pytest.raises(AssertionError, match="2 of 3 captured events") as failure:
        capture.assert_valid()
    assert "not-a-uuid" in str(failure.value) and "unparsable" in str(failure.value)


def test_a_captured_event_whose_data_lost_its_fields_is_refused():
    for message in MESSAGES.values():
        example = json.loads(json.dumps(message["examples"][0]["payload"]))
        example["data"] = {}
        schema_ref = message["payload"]["allOf"][1]["properties"]["data"]["$ref"]
        if DOCUMENT["components"]["schemas"][schema_ref.rsplit("/", 1)[1]].get("required"):
            with pytest.raises(ContractViolation):
                validate_event(example)
