"""The published contract: every public route is in /openapi.json with its models, real answers match the
document exactly, a cursor of another list (or an edited one) is a 400, and input that cannot be stored is a
422, never a 500."""
from __future__ import annotations

import json

import jsonschema

from libs.pagination import encode_cursor
from tests.integration.notifications.notifications_kit import uid
from tests.support import eventually

PUBLIC_OPERATIONS = 19


def answer_schema(document: dict, method: str, path: str, status: int) -> jsonschema.Draft202012Validator:
    schema = document["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    return jsonschema.Draft202012Validator({**schema, "components": document["components"]})


def assert_matches(document: dict, method: str, path: str, status: int, body) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in answer_schema(document, method, path,
                                                                           status).iter_errors(body)]
    assert not errors, (method, path, errors)


async def test_every_public_route_is_published_with_its_models(notifications):
    status, document = await notifications.get("/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    operations = [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()]
    assert len(operations) == PUBLIC_OPERATIONS
    assert all(path.startswith("/notifications/") and "/internal/" not in path for path, _, _ in operations)
    for path, method, op in operations:
        answers = {code: spec for code, spec in op["responses"].items() if code.startswith("2")}
        assert answers, (method, path)
        assert all(code == "204" or "content" in spec for code, spec in answers.items()), (method, path)
        assert op.get("summary") and op.get("tags") == ["notifications"], (method, path)
        if method in ("post", "put", "patch") and not path.endswith("/retry"):
            assert "requestBody" in op, (method, path)


async def test_real_answers_match_the_published_document(notifications, webhook_receiver):
    _, document = await notifications.get("/openapi.json")
    member_id = uid("mbr")
    member = notifications.member_token(member_id)
    # Quiet hours given without a time zone are kept (and shown) in the default one.
    status, prefs, _ = await notifications.send("PATCH", "/notifications/me/preferences", {
        "quiet_hours": {"start": "22:00", "end": "07:00"}, "channels": {"sms": False}}, token=member)
    assert status == 200 and prefs["quiet_hours"] == {"start": "22:00", "end": "07:00", "timezone": "Asia/Shanghai"}
    assert_matches(document, "patch", "/notifications/me/preferences", 200, prefs)

    status, hook, _ = await notifications.send("POST", "/notifications/webhooks", {
        "url": webhook_receiver.url, "event_types": ["orders.order.placed"]})
    assert status == 201 and hook["secret"]
    assert_matches(document, "post", "/notifications/webhooks", 201, hook)
    await notifications.register_member(member_id, phone="+8613900000001", locale="en")
    envelope = await notifications.publish("orders.order.placed", {"order_id": uid("ord"), "member_id": member_id})

    async def sent():
        items = await notifications.deliveries(event_id=envelope.id)
        return items if items and items[0]["status"] == "sent" else None

    await eventually(sent)
    status, page = await notifications.get("/notifications/deliveries", event_id=envelope.id)
    assert_matches(document, "get", "/notifications/deliveries", 200, page)
    [delivery] = page["items"]
    assert delivery["created_at"].endswith("Z") and delivery["attempts"][0]["finished_at"].endswith("Z")
    status, one = await notifications.get(f"/notifications/deliveries/{delivery['id']}")
    assert_matches(document, "get", "/notifications/deliveries/{delivery_id}", 200, one)
    for path in ("/notifications/webhooks", "/notifications/templates", "/notifications/outbound",
                 "/notifications/catalog", f"/notifications/members/{member_id}/preferences",
                 "/notifications/templates/orders.order.shipped/sms/en"):
        status, body = await notifications.get(path)
        assert status == 200, (path, body)
        published = path.replace(member_id, "{member_id}").replace("orders.order.shipped/sms/en",
                                                                    "{type}/{channel}/{locale}")
        assert_matches(document, "get", published, 200, body)
    status, contact, _ = await notifications.send("PUT", f"/notifications/recipients/store:{uid('loc')}",
                                                  {"email": "manager@store.example"})
    assert_matches(document, "put", "/notifications/recipients/{recipient_id}", 200, contact)


async def test_a_cursor_of_another_list_or_an_edited_one_is_a_bad_request(notifications):
    member_id = uid("mbr")
    await notifications.register_member(member_id, phone="+8613900000002")
    for _ in range(2):
        await notifications.publish("orders.order.shipped", {"order_id": uid("ord"), "member_id": member_id})
    page = await eventually(lambda: _page_with_cursor(notifications, member_id))
    cursor = page["next_cursor"]
    status, _ = await notifications.get("/notifications/deliveries", recipient=member_id, limit=1, cursor=cursor)
    assert status == 200
    foreign = encode_cursor(page["items"][0]["id"], "stock.levels")
    edited = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    for bad in (foreign, edited, "!!not-a-cursor"):
        status, problem = await notifications.get("/notifications/deliveries", recipient=member_id, cursor=bad)
        assert status == 400 and problem["type"].endswith("/bad-cursor"), (bad, problem)


async def _page_with_cursor(notifications, member_id: str):
    status, page = await notifications.get("/notifications/deliveries", recipient=member_id, limit=1)
    return page if status == 200 and page["next_cursor"] else None


async def test_input_that_cannot_be_stored_is_refused_not_a_server_error(notifications, webhook_receiver):
    bodies = [("/notifications/campaigns", {"name": "n", "tag": "t", "data": {"a\u0000b": 1}}),
              ("/notifications/campaigns", {"name": "n", "tag": "t", "data": {"k": ["\ud800"]}}),
              ("/notifications/webhooks", {"url": webhook_receiver.url, "event_types": ["stock.level_low"],
                                           "description": "\udfff"})]
    headers = {**notifications.auth(), "Content-Type": "application/json"}
    for path, body in bodies:
        # Valid JSON text, as a fuzzer sends it: NUL and lone surrogates written as \\u escapes.
        async with notifications.http.post(notifications.base + path, headers=headers,
                                           data=json.dumps(body, ensure_ascii=True).encode()) as response:
            problem = await response.json(content_type=None)
            # The kit refuses it for every service before a handler runs.
            assert response.status == 422 and problem["type"].endswith("/unstorable-text"), (body, problem)
