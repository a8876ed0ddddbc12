"""The AsyncAPI document: up to date with the event models, valid AsyncAPI 3.0.0, and a working contract check."""
from __future__ import annotations

import copy
import uuid

import pytest
import yaml

from libs.bus import Envelope
from scripts import asyncapi
from scripts.asyncapi import ContractViolation, validate_event

COMMITTED = yaml.safe_load(asyncapi.DOCUMENT_PATH.read_text())
MESSAGES = COMMITTED["components"]["messages"]
EVENTS = asyncapi.discover_events()


def test_committed_document_is_up_to_date_with_the_event_models():
    assert asyncapi.DOCUMENT_PATH.read_text() == asyncapi.render(asyncapi.build_document()), (
        "deploy/asyncapi/asyncapi.yaml is stale: run `.venv/bin/python scripts/asyncapi.py` and commit it")


def test_committed_document_is_valid_asyncapi_3():
    assert asyncapi.document_errors(COMMITTED) == []


def test_schema_check_catches_a_broken_document():
    broken = copy.deepcopy(COMMITTED)
    first_channel = next(iter(broken["channels"].values()))
    del first_channel["messages"]
    first_channel["adress"] = "typo"
    assert asyncapi.document_errors(broken) != []


def test_every_event_model_of_every_service_has_a_message_on_its_routing_key():
    assert EVENTS, "no IntegrationEvent subclasses found in services/*/events.py"
    for event in EVENTS:
        assert event.message_id in MESSAGES, f"{event.message_id} is not documented: rerun scripts/asyncapi.py"
        message = MESSAGES[event.message_id]
        assert message["x-publisher"] == event.service
        channel = COMMITTED["channels"][event.event_type]
        assert channel["address"] == event.event_type
        assert channel["bindings"]["amqp"]["exchange"]["name"] == "o2o.events"
        assert event.message_id in channel["messages"]


@pytest.mark.parametrize("message_id", sorted(MESSAGES))
def test_sample_event_of_every_type_validates_and_round_trips_through_its_model(message_id):
    example = MESSAGES[message_id]["examples"][0]["payload"]
    validate_event(example)
    model = next(e.model for e in EVENTS if e.message_id == message_id)
    # The document's example is accepted by the publisher's own model, and what the outbox would put on the
    # wire for that model (Envelope JSON) validates too: the document and the models agree both ways.
    event = model.model_validate(example["data"])
    wire = Envelope(type=model.event_type, version=model.version, source=example["source"], subject=example["subject"],
                    correlation_id="req_1", data=event.model_dump(mode="json"))
    validate_event(Envelope.model_validate_json(wire.model_dump_json()).model_dump(mode="json"))


def _sample(message_id: str = "catalog.product.published.v1") -> dict:
    return copy.deepcopy(MESSAGES[message_id]["examples"][0]["payload"])


def test_contract_rejects_an_unknown_event_type():
    event = _sample() | {"type": "catalog.product.teleported"}
    with pytest.raises(ContractViolation, match="not in the AsyncAPI document"):
        validate_event(event)


def test_contract_rejects_an_undocumented_version():
    with pytest.raises(ContractViolation, match="documented versions"):
        validate_event(_sample() | {"version": 99})


def test_contract_rejects_a_data_field_missing_or_added():
    event = _sample()
    required = MESSAGES["catalog.product.published.v1"]["payload"]["allOf"][1]["properties"]["data"]["$ref"]
    schema = COMMITTED["components"]["schemas"][required.rsplit("/", 1)[1]]
    missing = schema["required"][0]
    del event["data"][missing]
    with pytest.raises(ContractViolation, match=missing):
        validate_event(event)
    extra = _sample()
    extra["data"]["surprise"] = 1
    with pytest.raises(ContractViolation, match="surprise"):
        validate_event(extra)


def test_contract_rejects_a_bad_envelope():
    with pytest.raises(ContractViolation, match="uuid"):
        validate_event(_sample() | {"id": "not-a-uuid"})
    with pytest.raises(ContractViolation, match="date-time"):
        validate_event(_sample() | {"occurred_at": "yesterday"})
    with pytest.raises(ContractViolation, match="source"):
        validate_event(_sample() | {"source": "somebody-else"})
    with pytest.raises(ContractViolation, match="subject"):
        event = _sample()
        del event["subject"]
        validate_event(event)


def test_contract_accepts_a_real_envelope_with_fresh_id_and_time():
    event = _sample() | {"id": str(uuid.uuid4()), "occurred_at": "2026-11-23T11:00:00.123456+00:00",
                         "causation_id": str(uuid.uuid4())}
    validate_event(event)


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_reference_in_the_document_resolves():
    for ref in set(_refs(COMMITTED)):
        assert ref.startswith("#/"), ref
        node = COMMITTED
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def test_operations_only_use_messages_of_their_channel():
    for name, operation in COMMITTED["operations"].items():
        channel_ref = operation["channel"]["$ref"]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/"), name
