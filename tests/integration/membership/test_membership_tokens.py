"""Tokens issued here verify against the published JWKS; expired, wrong-audience and tampered
tokens fail; too many OTP attempts are refused. Plus the key ring shared by replicas and rotation."""
from __future__ import annotations

import asyncio
import base64
import json
import time

import jwt
import pytest

from libs.auth import TokenVerifier
from libs.problems import Problem
from services.membership.keys import KeyRing
from services.membership.usecases import KEYS
from tests.integration.membership.conftest import bearer, make_settings, unique_phone


def verifier_for(settings, jwks: dict, audience: str | None = None) -> TokenVerifier:
    verifier = TokenVerifier(settings.model_copy(update={"jwt_audience": audience or settings.jwt_audience}))
    verifier.load_jwks(jwks)
    return verifier


async def test_every_kind_of_token_verifies_against_the_published_jwks(membership):
    status, jwks = await membership.api.get("/auth/jwks")
    assert status == 200 and jwks["keys"] and all(k["kty"] == "RSA" and "d" not in k for k in jwks["keys"])
    verifier = verifier_for(membership.settings, jwks)

    status, staff = await membership.api.post("/auth/staff/token", {"username": "jingan.manager",
                                                                "password": "jingan-manager-pass"})
    assert status == 200 and staff["token_type"] == "Bearer" and staff["expires_in"] > 0
    principal = await verifier.verify(staff["access_token"])
    assert principal.roles == {"store_manager"} and principal.staff_id == "stf_jingan_mgr"
    assert principal.store_ids == {"loc_sh_jingan"}
    header = jwt.get_unverified_header(staff["access_token"])
    assert header["alg"] == "RS256" and header["kid"] in {k["kid"] for k in jwks["keys"]}
    claims = principal.claims
    assert claims["iss"] == membership.settings.jwt_issuer and claims["aud"] == membership.settings.jwt_audience
    assert claims["nbf"] == claims["iat"] and claims["exp"] > claims["iat"]

    franchisee = await verifier.verify(await membership.staff_token("dongfang.owner", "dongfang-owner-pass"))
    assert franchisee.franchisee_id == "frn_dongfang" and franchisee.roles == {"franchisee"}

    service = await verifier.verify(await membership.service_token())
    assert service.roles == {"service"} and service.subject == "svc:orders"

    phone = unique_phone()
    token, member_id = await membership.member_login(phone)
    member = await verifier.verify(token)
    assert member.member_id == member_id and member.roles == {"customer"} and member_id.startswith("mbr_")


async def test_expired_wrong_audience_and_tampered_tokens_are_refused(membership):
    status, jwks = await membership.api.get("/auth/jwks")
    verifier = verifier_for(membership.settings, jwks)
    good = await membership.staff_token("hq.admin", "hq-admin-pass")
    assert (await verifier.verify(good)).is_admin

    # wrong audience
    with pytest.raises(Problem) as refused:
        await verifier_for(membership.settings, jwks, audience="another-api").verify(good)
    assert refused.value.status == 401

    # expired: signed by the real key ring, but exp well past the allowed clock skew
    now = int(time.time())
    expired = membership[KEYS].sign({"sub": "stf_hq_admin", "roles": ["hq_admin"],
                                     "iss": membership.settings.jwt_issuer,
                                         "aud": membership.settings.jwt_audience, "iat": now - 7200, "nbf": now - 7200,
                                         "exp": now - 3600})
    with pytest.raises(Problem) as refused:
        await verifier.verify(expired)
    assert refused.value.status == 401 and refused.value.type == "token-expired"

    # tampered: a customer promotes itself to hq_admin in the payload, keeping the signature
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["hq_admin", "service"]
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(Problem) as refused:
        await verifier.verify(f"{header}.{forged}.{signature}")
    assert refused.value.status == 401 and refused.value.type == "invalid-token"

    # the service itself refuses them too, over HTTP
    status, problem = await membership.api.get("/members/me", headers=bearer(f"{header}.{forged}.{signature}"))
    assert status == 401 and problem["type"].endswith("invalid-token")
    status, problem = await membership.api.get("/members/me", headers=bearer(expired))
    assert status == 401 and problem["type"].endswith("token-expired")


async def test_too_many_wrong_codes_burn_the_code_even_when_guessed_concurrently(membership):
    phone = unique_phone()
    status, sent = await membership.api.post("/auth/member/otp", {"phone": phone})
    assert status == 202 and sent["expires_in"] == membership.settings.otp_ttl_s
    right = sent["dev_code"]
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    answers = await asyncio.gather(*[membership.api.post("/auth/member/token", {"phone": phone, "code": wrong})
                                     for _ in range(12)])
    statuses = sorted(status for status, _ in answers)
    max_attempts = membership.settings.otp_max_attempts
    assert statuses.count(401) == max_attempts and statuses.count(429) == 12 - max_attempts
    assert all(body["type"].endswith("otp-attempts-exceeded") for status, body in answers if status == 429)

    # the right code no longer works: the attempts are used up
    status, problem = await membership.api.post("/auth/member/token", {"phone": phone, "code": right})
    assert status == 429 and problem["type"].endswith("otp-attempts-exceeded")

    # a fresh code works, once
    status, sent = await membership.api.post("/auth/member/otp", {"phone": phone})
    status, token = await membership.api.post("/auth/member/token", {"phone": phone, "code": sent["dev_code"]})
    assert status == 200 and token["access_token"]
    status, problem = await membership.api.post("/auth/member/token", {"phone": phone, "code": sent["dev_code"]})
    assert status == 401


async def test_code_requests_per_phone_are_limited_and_published_for_notifications(membership):
    phone = unique_phone()
    for _ in range(membership.settings.otp_max_requests):
        status, _ = await membership.api.post("/auth/member/otp", {"phone": phone, "locale": "en"})
        assert status == 202
    status, problem = await membership.api.post("/auth/member/otp", {"phone": phone})
    assert status == 429 and problem["type"].endswith("otp-rate-limited")
    outbox = membership.repos.mongo.db["outbox"]
    events = await outbox.find({"type": "membership.otp.requested", "envelope.subject": phone}).to_list(None)
    assert len(events) == membership.settings.otp_max_requests
    assert {e["envelope"]["data"]["locale"] for e in events} == {"en"}
    assert all("code" not in e["envelope"]["data"] for e in events)  # notifications fetches the code


async def test_bad_credentials_and_bad_input_are_clean_4xx(membership):
    status, problem = await membership.api.post("/auth/staff/token", {"username": "hq.admin", "password": "nope"})
    assert status == 401 and problem["type"].endswith("invalid-credentials")
    status, problem = await membership.api.post("/auth/staff/token", {"username": "nobody", "password": "nope"})
    assert status == 401 and problem["type"].endswith("invalid-credentials")
    status, problem = await membership.api.post("/auth/service/token", {"client_id": "orders", "client_secret": "x",
                                                                       "audience": "stock"})
    assert status == 401
    status, problem = await membership.api.post("/auth/service/token", {
        "client_id": "intruder", "client_secret": membership.settings.orders_client_secret, "audience": "stock"})
    assert status == 401
    status, problem = await membership.api.post("/auth/member/otp", {"phone": "12345"})
    assert status == 422 and problem["type"].endswith("validation-error")
    status, problem = await membership.api.post("/auth/member/otp", {"phone": "+86 1380000000000000000"})
    assert status == 422 and problem["type"].endswith("invalid-phone")
    status, problem = await membership.api.post("/auth/member/token", {"phone": unique_phone(), "code": "123456"})
    assert status == 401
    reply = await membership.api.call("POST", "/auth/member/otp", data=b"{not json")
    assert reply.status == 400 and reply.headers["Content-Type"].startswith("application/problem+json")


async def test_replicas_starting_together_share_one_key_and_rotation_keeps_the_previous(
        start_membership, mongo_url, bus_namespace):
    first = await start_membership()
    # A second replica on the same database: it must adopt the stored key, not make its own.
    second = await start_membership(settings=make_settings(mongo_url, bus_namespace).model_copy(
        update={"mongo_db_prefix": first.settings.mongo_db_prefix}))
    _, jwks_first = await first.api.get("/auth/jwks")
    _, jwks_second = await second.api.get("/auth/jwks")
    assert jwks_first == jwks_second and len(jwks_first["keys"]) == 1

    # Many rings racing to create the key on a fresh database all end with the same one.
    fresh = make_settings(mongo_url, bus_namespace)
    from libs.mongo import Mongo
    mongos = [Mongo(fresh.mongo_url, fresh.mongo_db) for _ in range(4)]
    for mongo in mongos:
        await mongo.start([], collections=["signing_keys"])
    rings = [KeyRing(mongo, 2048) for mongo in mongos]
    await asyncio.gather(*[ring.ensure() for ring in rings])
    assert len({ring.current_kid for ring in rings}) == 1
    for mongo in mongos:
        await mongo.close()

    old_token = await first.service_token()
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_kid = (await first[KEYS].rotate())["kid"]
    assert new_kid != old_kid
    await second[KEYS].refresh()  # what its periodic refresh job does
    _, jwks = await second.api.get("/auth/jwks")
    assert [k["kid"] for k in jwks["keys"]] == [new_kid, old_kid]
    verifier = verifier_for(first.settings, jwks)
    assert (await verifier.verify(old_token)).roles == {"service"}
    new_token = await second.service_token()
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert (await verifier.verify(new_token)).roles == {"service"}


async def test_refresh_tokens_are_single_use_and_reuse_revokes_the_login(membership):
    phone = unique_phone()
    _, sent = await membership.api.post("/auth/member/otp", {"phone": phone})
    status, login = await membership.api.post("/auth/member/token", {"phone": phone, "code": sent["dev_code"]})
    assert status == 200 and login["refresh_token"] and login["refresh_expires_in"] > 0
    status, refreshed = await membership.api.post("/auth/token/refresh", {"refresh_token": login["refresh_token"]})
    assert status == 200 and refreshed["refresh_token"] != login["refresh_token"]
    _, jwks = await membership.api.get("/auth/jwks")
    verifier = verifier_for(membership.settings, jwks)
    assert (await verifier.verify(refreshed["access_token"])).member_id == \
        (await verifier.verify(login["access_token"])).member_id

    # The first token is replayed (stolen?): refused, and the whole login is revoked.
    status, problem = await membership.api.post("/auth/token/refresh", {"refresh_token": login["refresh_token"]})
    assert status == 401 and problem["type"].endswith("refresh-token-reused")
    status, problem = await membership.api.post("/auth/token/refresh", {"refresh_token": refreshed["refresh_token"]})
    assert status == 401

    # Staff get one too; logging out ends it.
    status, staff = await membership.api.post("/auth/staff/token", {"username": "jingan.staff",
                                                                "password": "jingan-staff-pass"})
    assert status == 200 and staff["refresh_token"]
    status, _ = await membership.api.post("/auth/logout", {"refresh_token": staff["refresh_token"]})
    assert status == 204
    status, _ = await membership.api.post("/auth/token/refresh", {"refresh_token": staff["refresh_token"]})
    assert status == 401
    status, _ = await membership.api.post("/auth/token/refresh", {"refresh_token": "x" * 43})
    assert status == 401
