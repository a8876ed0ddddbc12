"""Service identity: each service has its own credential, a token is good for one called service, and it opens
only the internal routes its scopes name. Login codes never travel on the bus: notifications fetches them.

The attacks: with the one shared secret, any service (or whoever read it) could get a token that membership,
stock and orders all took as an administrator's; a token minted for notifications added points to a member.
"""
from __future__ import annotations

from urllib.parse import quote

from tests.integration.membership.conftest import unique_phone
from tests.support import TokenMint

LIN = "mbr_demo_lin"


def bearer(token: str) -> dict[str, str]:
    return TokenMint.bearer(token)


async def token_for(membership, client_id: str, audience: str, secret: str | None = None):
    return await membership.api.post("/auth/service/token", {
        "client_id": client_id, "audience": audience,
        "client_secret": membership.settings.client_secrets()[client_id] if secret is None else secret})


async def test_each_service_has_its_own_secret_and_a_token_names_one_audience(membership):
    # Another service's secret does not work for this client.
    status, problem = await token_for(membership, "orders", "stock", membership.settings.notifications_client_secret)
    assert status == 401 and problem["type"].endswith("invalid-client")
    # A client asks only for an audience it has a grant at.
    status, problem = await token_for(membership, "notifications", "stock")
    assert status == 403 and problem["type"].endswith("no-grant")
    status, answer = await token_for(membership, "orders", "stock")
    assert status == 200
    # A token issued for stock is not accepted by membership.
    status, problem = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": "ord_x", "member_id": LIN, "channel": "app", "lines": []},
        headers=bearer(answer["access_token"]))
    assert status == 401


async def test_a_service_token_opens_only_the_routes_of_its_scopes_never_a_persons(membership):
    notifications = await membership.service_token("notifications")
    # notifications may read campaign audiences, not hold coupons and points for an order...
    status, _ = await membership.api.get("/members/internal/members", params={"limit": "1"},
                                         headers=bearer(notifications))
    assert status == 200
    status, problem = await membership.api.post("/members/internal/checkout-holds", {
        "order_id": "ord_n1", "member_id": LIN, "channel": "app", "lines": []}, headers=bearer(notifications))
    assert status == 403
    # ...and no service token is taken where a person's role is asked (HQ adjusting points).
    admin = bearer(await membership.staff_token("hq.admin", "hq-admin-pass"))
    _, before = await membership.api.get(f"/members/{LIN}/points", headers=admin)
    for token in (notifications, await membership.service_token("orders")):
        status, problem = await membership.api.post(f"/members/{LIN}/points/adjustments",
                                                    {"delta": 1000, "note": "free points"}, headers=bearer(token))
        assert status == 403, problem
    _, after = await membership.api.get(f"/members/{LIN}/points", headers=admin)
    assert after["balance"] == before["balance"]


async def test_the_login_code_is_not_on_the_bus_and_only_notifications_may_fetch_it(membership):
    phone = unique_phone()
    status, sent = await membership.api.post("/auth/member/otp", {"phone": phone, "locale": "en"})
    assert status == 202
    outbox = membership.repos.mongo.db["outbox"]
    [event] = await outbox.find({"type": "membership.otp.requested", "envelope.subject": phone}).to_list(None)
    assert "code" not in event["envelope"]["data"] and sent["dev_code"] not in str(event)
    stored = await membership.repos.mongo.db["otp_challenges"].find_one({"_id": phone})
    assert stored is None or sent["dev_code"] not in str(stored)

    path = f"/members/internal/otp-codes/{quote(phone, safe='')}"
    status, answer = await membership.api.get(path, headers=bearer(await membership.service_token("notifications")))
    assert status == 200 and answer == {"phone": phone, "code": sent["dev_code"]}
    for token in (await membership.service_token("orders"), await membership.staff_token("hq.admin", "hq-admin-pass")):
        status, _ = await membership.api.get(path, headers=bearer(token))
        assert status == 403
    status, _ = await membership.api.get(path)
    assert status == 401

    # Used: there is nothing left to send.
    status, _ = await membership.api.post("/auth/member/token", {"phone": phone, "code": sent["dev_code"]})
    assert status == 200
    status, problem = await membership.api.get(path, headers=bearer(await membership.service_token("notifications")))
    assert status == 409 and problem["type"].endswith("no-pending-code")
