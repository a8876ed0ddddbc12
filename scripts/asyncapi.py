"""The AsyncAPI 3.0 document of every bus event, generated from the services' pydantic event models.

    python scripts/asyncapi.py            # write deploy/asyncapi/asyncapi.yaml
    python scripts/asyncapi.py --check    # exit 1 when the committed document is stale
    python scripts/asyncapi.py --validate # check the document against the vendored AsyncAPI 3.0.0 schema

Sources of truth:
- the envelope: `libs.bus.Envelope`;
- the events: every `libs.bus.IntegrationEvent` subclass defined in `services/<svc>/events.py`
  (routing key = `event_type`, `version` a class attribute, publisher = the owning service);
- who consumes what: each service's `consumers.subscribe(app, bus)` run against a recording bus.

`validate_event(envelope_dict)` checks one captured envelope (and its `data`) against the committed
document: the contract test the end-to-end tests run on every event they see on the bus.
"""
from __future__ import annotations

import argparse
import copy
import functools
import importlib
import inspect
import json
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from jsonschema import Draft7Validator, Draft202012Validator, FormatChecker  # noqa: E402
from pydantic.json_schema import models_json_schema  # noqa: E402
from referencing import Registry, Resource  # noqa: E402
from referencing.jsonschema import DRAFT202012  # noqa: E402

from libs.bus import Envelope, IntegrationEvent  # noqa: E402

DOCUMENT_PATH = ROOT / "deploy" / "asyncapi" / "asyncapi.yaml"
ASYNCAPI_SCHEMA_PATH = ROOT / "deploy" / "schemas" / "asyncapi-3.0.0.json"
EXCHANGE = "o2o.events"
DOCUMENT_URI = "urn:o2o:asyncapi"
# Fixed values so that the generated document is byte-for-byte reproducible (the staleness test relies on it).
EXAMPLE_EVENT_ID = "0b7c6a2e-5d1f-4c3e-9a8b-2f6d4e1c7a90"
EXAMPLE_TIME = "2026-01-15T08:30:00Z"


@dataclass(frozen=True)
class EventModel:
    service: str
    model: type[IntegrationEvent]

    @property
    def event_type(self) -> str:
        return self.model.event_type

    @property
    def version(self) -> int:
        return self.model.version

    @property
    def message_id(self) -> str:
        return f"{self.event_type}.v{self.version}"

    @property
    def schema_name(self) -> str:
        return f"{self.service}.{self.model.__name__}"


# -- discovery ------------------------------------------------------------------------------------------
def service_names() -> list[str]:
    import services
    return sorted(m.name for m in pkgutil.iter_modules(services.__path__) if m.ispkg)


def discover_events() -> list[EventModel]:
    """Every IntegrationEvent subclass defined in services/<svc>/events.py, sorted by type and version."""
    found: dict[tuple[str, int], EventModel] = {}
    for service in service_names():
        if not (ROOT / "services" / service / "events.py").exists():
            continue
        module = importlib.import_module(f"services.{service}.events")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if not issubclass(obj, IntegrationEvent) or obj is IntegrationEvent or obj.__module__ != module.__name__:
                continue
            if not isinstance(getattr(obj, "event_type", None), str):
                continue  # an abstract intermediate base of the service's events
            key = (obj.event_type, obj.version)
            if key in found:
                raise ValueError(f"{key} is defined twice: {found[key].model} and {obj}")
            found[key] = EventModel(service, obj)
    return [found[k] for k in sorted(found)]


class _RecordingBus:
    """Stands in for libs.bus.Bus while a service's subscribe() registers its handlers."""

    def __init__(self) -> None:
        self.event_types: list[str] = []

    def on(self, event_type: str, handler: Any) -> None:
        self.event_types.append(event_type)


def discover_consumers() -> dict[str, list[str]]:
    """service -> event types it consumes (from its consumers.subscribe)."""
    consumers: dict[str, list[str]] = {}
    for service in service_names():
        if not (ROOT / "services" / service / "consumers.py").exists():
            continue
        module = importlib.import_module(f"services.{service}.consumers")
        subscribe = getattr(module, "subscribe", None)
        if subscribe is None:
            continue
        bus = _RecordingBus()
        subscribe({}, bus)  # handlers are partials over the app: nothing runs here
        consumers[service] = sorted(set(bus.event_types))
    return consumers


# -- schemas --------------------------------------------------------------------------------------------
def _rewrite_refs(node: Any, rename: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/components/schemas/"):
                name = value.rsplit("/", 1)[1]
                out[key] = f"#/components/schemas/{rename.get(name, name)}"
            else:
                out[key] = _rewrite_refs(value, rename)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(v, rename) for v in node]
    return node


def data_schemas(events: list[EventModel]) -> dict[str, dict]:
    """components.schemas for every event's data, nested models named `<service>.<Model>` (no collisions)."""
    schemas: dict[str, dict] = {}
    by_service: dict[str, list[EventModel]] = {}
    for event in events:
        by_service.setdefault(event.service, []).append(event)
    for service, service_events in sorted(by_service.items()):
        keyed, defs = models_json_schema([(e.model, "validation") for e in service_events],
                                         ref_template="#/components/schemas/{model}")
        local = defs.get("$defs", {})
        rename = {name: f"{service}.{name}" for name in local}
        for name, schema in local.items():
            schemas[rename[name]] = _rewrite_refs(schema, rename)
        for event in service_events:
            top = keyed[(event.model, "validation")]
            assert top["$ref"].endswith("/" + event.model.__name__), top
    return dict(sorted(schemas.items()))


def envelope_schema() -> dict:
    schema = Envelope.model_json_schema()
    schema["description"] = ("CloudEvents-like envelope of every integration event (docs/ARCHITECTURE.md §3). "
                             "Routing key = `type`. Consumers dedupe by `id`.")
    props = schema["properties"]
    props["id"].update(format="uuid", description="Unique event id; consumers dedupe by it (inbox).")
    props["type"]["description"] = "Event type, past tense; also the AMQP routing key."
    props["version"]["description"] = "Schema version of `data` for this type (additive changes keep it)."
    props["source"]["description"] = "Publishing service."
    props["occurred_at"]["description"] = "When the state change committed (UTC, RFC 3339)."
    props["subject"]["description"] = "Id of the aggregate the event is about (e.g. ord_..., mbr_...)."
    props["correlation_id"]["description"] = "Request id that started the flow."
    props["causation_id"]["description"] = "Id of the event or request this one responds to."
    # Envelope fields that have defaults are still always present on the wire.
    schema["required"] = ["id", "type", "version", "source", "occurred_at", "subject", "data"]
    return schema


# -- examples -------------------------------------------------------------------------------------------
def _example(schema: dict, components: dict[str, dict], name: str = "") -> Any:
    """A value that satisfies `schema` (the subset of JSON Schema pydantic emits), deterministic."""
    if "$ref" in schema:
        return _example(components[schema["$ref"].rsplit("/", 1)[1]], components, name)
    for key in ("examples",):
        if schema.get(key):
            return copy.deepcopy(schema[key][0])
    if "const" in schema:
        return schema["const"]
    if schema.get("default") not in (None, [], {}):  # an empty default would make a thin example
        return copy.deepcopy(schema["default"])
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _example(options[0], components, name)
    if "allOf" in schema:
        return _example(schema["allOf"][0], components, name)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        value = {prop: _example(sub, components, prop) for prop, sub in schema.get("properties", {}).items()}
        extra = schema.get("additionalProperties")
        if not value and isinstance(extra, dict):
            value = {"app": _example(extra, components, name)}
        return value
    if kind == "array":
        count = max(1, schema.get("minItems", 1))
        return [_example(schema.get("items", {}), components, name) for _ in range(count)]
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1 if "exclusiveMinimum" in schema else 1)
        return max(int(low), 1) if schema.get("maximum", 10 ** 9) >= 1 else int(low)
    if kind == "number":
        return float(schema.get("minimum", 1.0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "string":
        fmt = schema.get("format")
        if fmt == "date-time":
            return EXAMPLE_TIME
        if fmt == "date":
            return EXAMPLE_TIME[:10]
        if fmt == "email":
            return "member@example.com"
        if fmt == "uuid":
            return EXAMPLE_EVENT_ID
        text = _sample_string(name)
        min_length = schema.get("minLength", 0)
        return text if len(text) >= min_length else text + "x" * (min_length - len(text))
    return None


# Plausible values by field name, so that examples read like real events for other teams.
_ID_PREFIXES = {"order_id": "ord_", "member_id": "mbr_", "location_id": "loc_", "store_id": "loc_", "sku_id": "sku_",
                "product_id": "prd_", "reservation_id": "rsv_", "staff_id": "stf_", "campaign_id": "cmp_",
                "franchisee_id": "frn_", "coupon_id": "cpn_", "payment_id": "pay_", "statement_id": "stm_",
                "delivery_id": "dlv_", "return_id": "ret_"}


_SAMPLE_STRINGS = {"phone": "+8613800138000", "email": "member@example.com", "locale": "zh-CN", "channel": "app",
                   "currency": "CNY", "code": "123456", "type": "pickup", "ownership": "direct",
                   "provider": "sandbox", "status": "placed", "category": "apparel", "name": "Linen shirt",
                   "reason": "customer", "kind": "store", "mode": "pickup", "tier": "silver", "to_tier": "silver",
                   "from_tier": "member", "title": "Your order is ready", "template": "order_ready"}


def _sample_string(name: str) -> str:
    if name in _ID_PREFIXES:
        return _ID_PREFIXES[name] + "7f3a9c2e1b4d"
    if name.endswith("_id"):
        return name[:-3] + "_7f3a9c2e1b4d"
    if name.endswith("_at"):
        return EXAMPLE_TIME
    return _SAMPLE_STRINGS.get(name, name or "text")


def example_envelope(event: EventModel, data_schema_name: str, components: dict[str, dict]) -> dict:
    data = _example({"$ref": f"#/components/schemas/{data_schema_name}"}, components)
    subject = next((v for k, v in data.items() if k.endswith("_id") and isinstance(v, str)), "agg_7f3a9c2e1b4d") \
        if isinstance(data, dict) else "agg_7f3a9c2e1b4d"
    return {"id": EXAMPLE_EVENT_ID, "type": event.event_type, "version": event.version, "source": event.service,
            "occurred_at": EXAMPLE_TIME, "subject": subject, "correlation_id": "req_5d2c8e", "causation_id": None,
            "data": data}


# -- the document ---------------------------------------------------------------------------------------
def _summary(event: EventModel) -> str:
    """First line of the model's docstring, else the event type in words ("orders.order.placed" -> "Order placed")."""
    doc = inspect.getdoc(event.model)
    if doc and doc != inspect.getdoc(IntegrationEvent):
        return doc.splitlines()[0]
    words = event.event_type.split(".", 1)[1].replace(".", " ").replace("_", " ")
    return words[0].upper() + words[1:]


def build_document() -> dict:
    events = discover_events()
    consumers = discover_consumers()
    schemas: dict[str, dict] = {"Envelope": envelope_schema(), **data_schemas(events)}
    amqp_exchange = {"name": EXCHANGE, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"}

    channels: dict[str, dict] = {}
    operations: dict[str, dict] = {}
    messages: dict[str, dict] = {}
    for event in events:
        message = {
            "name": event.model.__name__,
            "title": event.event_type,
            "summary": _summary(event),
            "contentType": "application/json",
            "payload": {"allOf": [
                {"$ref": "#/components/schemas/Envelope"},
                {"type": "object", "properties": {
                    "type": {"const": event.event_type},
                    "version": {"const": event.version},
                    "source": {"const": event.service},
                    "data": {"$ref": f"#/components/schemas/{event.schema_name}"},
                }},
            ]},
            "bindings": {"amqp": {"messageType": event.event_type, "bindingVersion": "0.3.0"}},
            "x-publisher": event.service,
        }
        doc = inspect.getdoc(event.model)
        if doc and doc != inspect.getdoc(IntegrationEvent):
            message["description"] = doc
        message["examples"] = [{"name": f"{event.model.__name__}Example", "summary": f"An example {event.event_type} event",
                                "payload": example_envelope(event, event.schema_name, schemas)}]
        messages[event.message_id] = message
        channel = channels.setdefault(event.event_type, {
            "address": event.event_type,
            "title": event.event_type,
            "description": f"Routing key `{event.event_type}` on the `{EXCHANGE}` topic exchange.",
            "messages": {},
            "bindings": {"amqp": {"is": "routingKey", "exchange": amqp_exchange, "bindingVersion": "0.3.0"}},
        })
        channel["messages"][event.message_id] = {"$ref": f"#/components/messages/{event.message_id}"}

    for event_type, channel in channels.items():
        publishers = sorted({messages[m]["x-publisher"] for m in channel["messages"]})
        for publisher in publishers:
            operations[f"{publisher}.publish.{event_type}"] = {
                "action": "send",
                "title": f"{publisher} publishes {event_type}",
                "summary": "Recorded in the publisher's outbox with its state change; relayed with publisher "
                           "confirms and `mandatory` (at-least-once).",
                "channel": {"$ref": f"#/channels/{event_type}"},
                "messages": [{"$ref": f"#/channels/{event_type}/messages/{m}"} for m in sorted(channel["messages"])],
                "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "bindingVersion": "0.3.0"}},
            }
    for service, types in sorted(consumers.items()):
        for event_type in types:
            if event_type not in channels:
                continue  # consumed but not (yet) modelled by a publisher: nothing to document
            operations[f"{service}.consume.{event_type}"] = {
                "action": "receive",
                "title": f"{service} consumes {event_type}",
                "summary": f"Quorum queue `{service}.events` bound with key `{event_type}`; retries via "
                           f"`{service}.retry`, then `{service}.dlq`.",
                "channel": {"$ref": f"#/channels/{event_type}"},
                "messages": [{"$ref": f"#/channels/{event_type}/messages/{m}"}
                             for m in sorted(channels[event_type]["messages"])],
                "bindings": {"amqp": {"ack": True, "bindingVersion": "0.3.0"}},
                "x-queue": f"{service}.events",
            }

    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "O2O Loop integration events",
            "version": "1.0.0",
            "description": (
                "Every event the O2O Loop services publish on the `o2o.events` topic exchange (routing key = "
                "event type). Delivery is at-least-once: dedupe by the envelope `id`. Generated by "
                "`scripts/asyncapi.py` from the services' pydantic models; do not edit by hand. "
                "How to subscribe: docs/EVENTS.md."),
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {"host": "rabbitmq:5672", "protocol": "amqp", "protocolVersion": "0.9.1",
                           "description": "RabbitMQ cluster (quorum queues); one vhost `/`."},
            "local": {"host": "127.0.0.1:5672", "protocol": "amqp", "protocolVersion": "0.9.1",
                      "description": "The broker `make run` uses."},
        },
        "channels": channels,
        "operations": dict(sorted(operations.items())),
        "components": {"schemas": schemas, "messages": messages},
    }


class _PlainDumper(yaml.SafeDumper):
    """No YAML anchors/aliases: readers (and some AsyncAPI tools) expect plain mappings."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(document: dict) -> str:
    header = "# Generated by scripts/asyncapi.py from services/*/events.py - do not edit; rerun the generator.\n"
    return header + yaml.dump(document, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True, width=110)


# -- validation -----------------------------------------------------------------------------------------
def document_errors(document: dict) -> list[str]:
    """Errors of the document against the vendored AsyncAPI 3.0.0 JSON schema (empty when valid)."""
    schema = json.loads(ASYNCAPI_SCHEMA_PATH.read_text())
    validator = Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text())


class ContractViolation(AssertionError):
    pass


def validate_event(envelope: dict, document_path: Path | str = DOCUMENT_PATH) -> None:
    """Check one event envelope (as JSON-decoded from the bus) and its `data` against the AsyncAPI document.

    Raises ContractViolation naming the event and every mismatch. The e2e tests call it on every captured event.
    """
    document = _load(str(document_path))
    event_type, version = envelope.get("type"), envelope.get("version")
    messages = document["components"]["messages"]
    message_id = f"{event_type}.v{version}"
    if message_id not in messages:
        known = sorted(k for k in messages if k.startswith(f"{event_type}.v"))
        raise ContractViolation(f"{message_id} is not in the AsyncAPI document"
                                + (f" (documented versions: {known})" if known else ""))
    validator = _validator(str(document_path), message_id)
    errors = sorted(validator.iter_errors(envelope), key=lambda e: list(e.absolute_path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.absolute_path)) or '<envelope>'}: {e.message}" for e in errors)
        raise ContractViolation(f"{message_id} (id {envelope.get('id')}) violates the contract: {details}")


@functools.lru_cache(maxsize=256)
def _validator(document_path: str, message_id: str) -> Draft202012Validator:
    resource = Resource.from_contents(_load(document_path), default_specification=DRAFT202012)
    registry = Registry().with_resource(DOCUMENT_URI, resource)
    return Draft202012Validator({"$ref": f"{DOCUMENT_URI}#/components/messages/{message_id}/payload"},
                                registry=registry, format_checker=FormatChecker())


# -- command line ---------------------------------------------------------------------------------------
def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed document is stale")
    parser.add_argument("--validate", action="store_true", help="validate the document against AsyncAPI 3.0.0")
    parser.add_argument("--output", type=Path, default=DOCUMENT_PATH)
    args = parser.parse_args(argv)
    if args.validate:  # the committed file, as other teams and tools read it
        committed = yaml.safe_load(args.output.read_text())
        errors = document_errors(committed)
        for message in committed["components"]["messages"].values():
            for example in message.get("examples", []):
                try:
                    validate_event(example["payload"], args.output)
                except ContractViolation as exc:
                    errors.append(f"example {example.get('name')}: {exc}")
        if errors:
            print("not valid:\n  " + "\n  ".join(errors[:20]), file=sys.stderr)
            return 1
        print(f"{args.output.name}: valid AsyncAPI 3.0.0, {len(committed['components']['messages'])} messages, "
              "every example validates")
        return 0
    document = build_document()
    text = render(document)
    errors = document_errors(document)
    if errors:
        print("generated document is not valid AsyncAPI 3.0.0:\n  " + "\n  ".join(errors[:20]), file=sys.stderr)
        return 1
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{_shown(args.output)} is stale: run `python scripts/asyncapi.py`", file=sys.stderr)
            return 1
        print(f"{_shown(args.output)} is up to date ({len(document['components']['messages'])} messages)")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {_shown(args.output)}: {len(document['channels'])} channels, "
          f"{len(document['components']['messages'])} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
