"""Pure parts of the kit: problems, envelope, bus names, settings, principal, JSON depth guard."""
from __future__ import annotations

import json
from datetime import UTC

import pytest
from pydantic_settings import SettingsConfigDict

from libs.auth import Principal
from libs.bus import Envelope, IntegrationEvent, Names
from libs.http import MAX_JSON_DEPTH, _depth
from libs.problems import Problem
from libs.settings import ServiceSettings, service_url_field


def test_problem_document_has_the_rfc9457_members_and_extensions():
    problem = Problem(409, "sold-out", "no stock left", nearest=["loc_1"])
    body = problem.to_dict("/orders")
    assert body == {"type": "https://o2o.example/problems/sold-out", "title": "Conflict", "status": 409,
                    "detail": "no stock left", "instance": "/orders", "nearest": ["loc_1"]}
    response = problem.response()
    assert response.status == 409 and response.content_type == "application/problem+json"


def test_problem_defaults_type_and_title_from_status():
    body = Problem(404).to_dict()
    assert body["type"].endswith("/not-found") and body["title"] == "Not Found" and body["detail"]


def test_envelope_defaults_are_utc_uuid_and_round_trip():
    class ThingHappened(IntegrationEvent):
        event_type = "unit.thing.happened"
        thing_id: str

    event = ThingHappened(thing_id="t1")
    envelope = Envelope(type=event.event_type, source="unit", subject="t1", data=event.model_dump())
    assert envelope.occurred_at.tzinfo is not None and envelope.occurred_at.utcoffset() == UTC.utcoffset(None)
    assert len(envelope.id) == 36 and envelope.version == 1
    again = Envelope.model_validate_json(envelope.model_dump_json())
    assert again == envelope
    with pytest.raises(ValueError):
        Envelope.model_validate({**json.loads(envelope.model_dump_json()), "surprise": 1})


def test_integration_events_refuse_unknown_fields():
    class ThingHappened(IntegrationEvent):
        event_type = "unit.thing.happened"
        thing_id: str

    with pytest.raises(ValueError):
        ThingHappened(thing_id="t", other=1)


def test_bus_names_carry_the_namespace():
    names = Names("t123.")
    assert names.exchange == "t123.o2o.events" and names.dlx == "t123.o2o.dlx"
    assert names.queue("stock") == "t123.stock.events"
    assert names.retry_queue("stock") == "t123.stock.retry" and names.dlq("stock") == "t123.stock.dlq"
    assert Names("").queue("orders") == "orders.events"


class _DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMOSVC_", extra="ignore", populate_by_name=True)
    service_name: str = "demosvc"
    port: int = 9999
    stock_url: str = service_url_field("stock", 8082)


def test_settings_read_shared_and_prefixed_environment(monkeypatch):
    monkeypatch.setenv("MONGO_URL", "mongodb://db1,db2/?replicaSet=rs0")
    monkeypatch.setenv("DEMOSVC_PORT", "7001")
    monkeypatch.setenv("STOCK_URL", "http://stock:8082")
    monkeypatch.setenv("O2O_BUS_NAMESPACE", "x.")
    settings = _DemoSettings()
    assert settings.mongo_url == "mongodb://db1,db2/?replicaSet=rs0"
    assert settings.port == 7001 and settings.stock_url == "http://stock:8082"
    assert settings.bus_namespace == "x." and settings.mongo_db == "o2o_demosvc"
    assert settings.dev_mode is False


def test_principal_from_claims_and_store_scope():
    staff = Principal.from_claims({"sub": "stf_1", "roles": ["store_staff"], "store_ids": ["loc_a"]})
    assert staff.can_see_store("loc_a") and not staff.can_see_store("loc_b") and not staff.is_admin
    admin = Principal.from_claims({"sub": "stf_hq", "roles": ["hq_admin"]})
    assert admin.can_see_store("loc_b") and admin.is_admin
    member = Principal.from_claims({"sub": "mbr_1", "roles": ["customer"], "member_id": "mbr_1"})
    assert member.member_id == "mbr_1" and not member.can_see_store(None)


def test_json_depth_guard():
    shallow = {"a": [1, {"b": 2}]}
    assert _depth(shallow) < MAX_JSON_DEPTH
    deep: object = 1
    for _ in range(MAX_JSON_DEPTH + 5):
        deep = [deep]
    assert _depth(deep) > MAX_JSON_DEPTH


def test_cursors_round_trip_and_foreign_or_tampered_cursors_are_400():
    import base64
    import json

    from libs.pagination import decode_cursor, encode_cursor, page_of
    from libs.refusal import Refusal
    assert decode_cursor(encode_cursor("ord_123|2026", "orders"), "orders") == "ord_123|2026"
    assert decode_cursor(encode_cursor(42, "stock.movements"), "stock.movements") == 42
    assert decode_cursor(None) is None
    tampered = json.loads(base64.urlsafe_b64decode(encode_cursor("ord_1", "orders") + "=="))
    tampered["k"] = "ord_9"
    tampered = base64.urlsafe_b64encode(json.dumps(tampered).encode()).decode().rstrip("=")
    for bad, scope in (("!!not-ours!!", ""), (encode_cursor("ord_1", "orders"), "members"), (tampered, "orders"),
                       (base64.urlsafe_b64encode(b"[1]").decode(), "")):
        with pytest.raises(Refusal) as caught:
            decode_cursor(bad, scope)
        assert caught.value.kind == "bad_request" and caught.value.code == "bad-cursor"
    page = page_of([{"_id": "k1"}, {"_id": "k2"}, {"_id": "k3"}], 2, scope="t", view=lambda d: d["_id"])
    assert page["items"] == ["k1", "k2"] and decode_cursor(page["next_cursor"], "t") == "k2"
    assert page_of([{"_id": "k1"}], 2)["next_cursor"] is None


@pytest.mark.parametrize("raw", [b'{"name": "\\ud800"}', b'{"a\\u0000b": 1}', b'{"list": [{"x": "\\udfff"}]}'])
async def test_text_no_database_can_store_is_a_422_before_any_handler_sees_it(raw):
    from aiohttp.test_utils import make_mocked_request

    from libs.http import read_json

    class Payload:
        async def read(self):
            return raw

    request = make_mocked_request("POST", "/things")
    request.read = Payload().read
    with pytest.raises(Problem) as caught:
        await read_json(request)
    assert caught.value.status == 422 and caught.value.type == "unstorable-text"
