"""Events as they really travel: recorded through a service's transactional outbox, relayed over the real
broker, captured from the bus and checked with the contract helper against the committed AsyncAPI document.

Every message of the document is sent this way (its example data, parsed by the publisher's own model), so
the models, the outbox/relay wire format and the document are shown to agree for every event type.
"""
from __future__ import annotations

import json

import aio_pika
import pytest
import yaml

from libs.bus import Names
from libs.outbox import Outbox
from libs.service import MONGO
from libs.testing import AMQP_URL, eventually, running_app, settings_for
from scripts import asyncapi
from scripts.asyncapi import ContractViolation, validate_event

DOCUMENT = yaml.safe_load(asyncapi.DOCUMENT_PATH.read_text())
MESSAGES = DOCUMENT["components"]["messages"]
MODELS = {event.message_id: event for event in asyncapi.discover_events()}


async def test_every_documented_event_relayed_over_the_bus_validates(mongo_url, bus_namespace):
    from services.catalog.app import create_app
    from services.catalog.settings import CatalogSettings

    settings = settings_for(CatalogSettings, mongo_url, bus_namespace)
    app = create_app(settings)
    captured: list[dict] = []
    recorded: dict[str, str] = {}  # envelope id -> message id
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        async with running_app(app, settings.port):
            channel = await connection.channel()
            exchange = await channel.declare_exchange(Names(bus_namespace).exchange, aio_pika.ExchangeType.TOPIC,
                                                      durable=True, passive=True)
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            await queue.bind(exchange, routing_key="#")

            async def capture(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    captured.append(json.loads(message.body))

            await queue.consume(capture)
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

            await eventually(lambda: recorded.keys() <= {e["id"] for e in captured}, timeout=30)
    finally:
        await connection.close()

    relayed = [e for e in captured if e["id"] in recorded]
    assert {recorded[e["id"]] for e in relayed} == set(MESSAGES)
    for envelope in relayed:
        validate_event(envelope)


def test_a_captured_event_whose_data_lost_its_fields_is_refused():
    for message in MESSAGES.values():
        example = json.loads(json.dumps(message["examples"][0]["payload"]))
        example["data"] = {}
        schema_ref = message["payload"]["allOf"][1]["properties"]["data"]["$ref"]
        if DOCUMENT["components"]["schemas"][schema_ref.rsplit("/", 1)[1]].get("required"):
            with pytest.raises(ContractViolation):
                validate_event(example)
