"""docs/EVENTS.md is true: its queue-binding snippet, run as written (names moved into this run's bus
namespace), receives events the services publish, and dead-letters what the consumer rejects."""
from __future__ import annotations

import json
import re
from pathlib import Path

import aio_pika
import yaml

from libs.outbox import Outbox
from libs.service import MONGO
from tests.support import AMQP_URL, eventually, running_app, settings_for
from scripts import asyncapi
from scripts.asyncapi import validate_event

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "EVENTS.md").read_text()


def binding_snippet(namespace: str) -> str:
    code = next(block for block in re.findall(r"```python\n(.*?)```", DOC, flags=re.DOTALL) if "async def declare" in block)
    return code.replace('"o2o.events"', f'"{namespace}o2o.events"').replace('"crm.', f'"{namespace}crm.')


def example(message_id: str) -> dict:
    document = yaml.safe_load(asyncapi.DOCUMENT_PATH.read_text())
    return document["components"]["messages"][message_id]["examples"][0]["payload"]


async def test_the_documented_binding_receives_events_and_dead_letters_rejects(mongo_url, bus_namespace):
    from services.catalog.app import create_app
    from services.catalog.settings import CatalogSettings

    events = {event.message_id: event for event in asyncapi.discover_events()}
    settings = settings_for(CatalogSettings, mongo_url, bus_namespace)
    app = create_app(settings)
    connection = await aio_pika.connect_robust(AMQP_URL)
    scope: dict = {}
    try:
        async with running_app(app, settings.port):  # declares the namespaced o2o.events exchange
            exec(binding_snippet(bus_namespace), scope)
            queue = await scope["declare"](connection)
            mongo = app[MONGO]

            async def publish(message_id: str) -> str:
                event = events[message_id]
                payload = example(message_id)
                model = event.model.model_validate(payload["data"])
                outbox = Outbox(mongo, event.service)
                envelope = await mongo.transaction(lambda s: outbox.record(s, model, subject=payload["subject"]))
                return envelope.id

            # Recorded first, so relayed (in recording order) before the bound event arrives.
            not_bound = await publish("catalog.product.published.v1")
            placed = await publish("orders.order.placed.v1")
            received: list[dict] = []

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                body = json.loads(message.body)
                received.append(body)
                await message.reject()  # "can never process": goes to the queue's DLQ

            await queue.consume(on_message)
            await eventually(lambda: any(e["id"] == placed for e in received), timeout=30)
            validate_event(next(e for e in received if e["id"] == placed))

            channel = await connection.channel()
            dlq = await channel.declare_queue(f"{bus_namespace}crm.orders.dlq", passive=True)

            async def dead_lettered():
                message = await dlq.get(fail=False, no_ack=True)
                return message is not None and json.loads(message.body)["id"] == placed

            await eventually(dead_lettered, timeout=30)
            assert not_bound not in {e["id"] for e in received}
    finally:
        channel = await connection.channel()
        for name in ("crm.orders", "crm.orders.dlq"):
            await channel.queue_delete(f"{bus_namespace}{name}")
        await channel.exchange_delete(f"{bus_namespace}crm.dlx")
        await connection.close()
