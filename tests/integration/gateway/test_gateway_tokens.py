"""Every kind of bad token is 401 at the gateway; a customer on an admin route is 403.
The token reaches the service unchanged, and the service verifies it again."""
from __future__ import annotations

import time

import pytest
from tests.integration.gateway.gateway_kit import TokenMint, bearer, call, recording_upstream, running_gateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROTECTED = "/api/v1/orders/ord_someone"  # orders is down in these tests: a 401 can only come from the gateway


def bad_tokens(key: TokenMint) -> dict[str, str]:
    now = int(time.time())
    other = TokenMint(kid=key.kid)  # same kid, another key: a forged signature
    valid = key.token()
    header, payload, signature = valid.split(".")
    tampered_payload = TokenMint().token(sub="mbr_victim").split(".")[1]
    return {
        "expired": key.token(exp=now - 3600, iat=now - 7200),
        "not_yet_valid": key.token(nbf=now + 3600),
        "wrong_audience": key.token(aud="another-api"),
        "wrong_issuer": key.token(iss="evil-issuer"),
        "tampered_payload": f"{header}.{tampered_payload}.{signature}",
        "forged_signature": other.token(),
        "alg_none": key.forged_token("none", None),
        "hs256_with_public_key": key.forged_token("HS256", key.public_pem),
        "unknown_kid": key.token(headers={"kid": "no-such-key"}),
        "no_expiry": key.token(exp=None),
        "garbage": "not.a.jwt",
    }


@pytest.mark.parametrize("kind", ["expired", "not_yet_valid", "wrong_audience", "wrong_issuer", "tampered_payload",
                                  "forged_signature", "alg_none", "hs256_with_public_key", "unknown_kid",
                                  "no_expiry", "garbage"])
async def test_bad_token_is_401_at_the_gateway(kind, signing_key, jwks_url, http):
    token = bad_tokens(signing_key)[kind]
    async with running_gateway(jwks_url) as gateway:
        status, body, headers = await call(http, "GET", gateway + PROTECTED, headers=bearer(token))
    assert status == 401, (kind, body)
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["type"].endswith(("invalid-token", "token-expired"))
    assert "Bearer" in headers["WWW-Authenticate"]


async def test_valid_token_passes_the_gateway(signing_key, jwks_url, http):
    """The control for the test above: the same route with a good token gets past auth (to a down upstream)."""
    async with running_gateway(jwks_url) as gateway:
        status, body, headers = await call(http, "GET", gateway + PROTECTED, headers=bearer(signing_key.token()))
    assert status == 503 and body["type"].endswith("upstream-unavailable")
    assert int(headers["Retry-After"]) >= 1


async def test_missing_or_malformed_authorization_is_401(jwks_url, http):
    async with running_gateway(jwks_url) as gateway:
        missing = await call(http, "GET", gateway + PROTECTED)
        basic = await call(http, "GET", gateway + PROTECTED, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert missing[0] == 401 and missing[1]["type"].endswith("/unauthorized")
    assert missing[2]["WWW-Authenticate"] == "Bearer"
    assert basic[0] == 401 and basic[1]["type"].endswith("/invalid-token")


async def test_customer_on_admin_route_is_403_and_admin_reaches_the_real_catalog(signing_key, jwks_url, catalog_url,
                                                                                  http):
    product = {"name": "Oolong tea 250 g", "category": "tees"}
    async with running_gateway(jwks_url, catalog_url=catalog_url) as gateway:
        customer = await call(http, "POST", gateway + "/api/v1/catalog/products", json=product,
                              headers=bearer(signing_key.token(roles=("customer",))))
        staff = await call(http, "POST", gateway + "/api/v1/catalog/products", json=product,
                           headers=bearer(signing_key.token(sub="stf_1", roles=("store_staff",), staff_id="stf_1",
                                                            store_ids=["loc_1"])))
        admin = await call(http, "POST", gateway + "/api/v1/catalog/products", json=product,
                           headers=bearer(signing_key.token(sub="adm_1", roles=("hq_admin",))))
        assert admin[0] == 201, admin
        read = await call(http, "GET", gateway + f"/api/v1/catalog/products/{admin[1]['id']}",
                          headers=bearer(signing_key.token(sub="adm_1", roles=("hq_admin",))))
        # Browsing is public: no token needed.
        browse = await call(http, "GET", gateway + "/api/v1/catalog/products")
    assert customer[0] == 403 and customer[1]["type"].endswith("/forbidden")
    assert staff[0] == 403
    assert read[0] == 200 and read[1]["name"] == product["name"]
    assert browse[0] == 200 and browse[1]["items"]


async def test_the_token_is_forwarded_unchanged_and_the_service_verifies_it_again(signing_key, jwks_url,
                                                                                  catalog_url, http):
    token = signing_key.token(sub="adm_1", roles=("hq_admin",))
    async with recording_upstream() as (orders_url, seen), running_gateway(jwks_url, orders_url=orders_url) as gateway:
        status, _, _ = await call(http, "GET", gateway + "/api/v1/orders/ord_1", headers={
            **bearer(token), "X-Forwarded-For": "6.6.6.6", "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "drop-me"})
    assert status == 200
    forwarded = seen.requests[0]["headers"]
    assert forwarded["Authorization"] == f"Bearer {token}"
    assert forwarded["X-Forwarded-For"] == "127.0.0.1"  # the client's claim is not passed on as truth
    # Only the fixed hop-by-hop set stops at the gateway: what a client names in Connection is not a way to make
    # the gateway drop headers it judged (test_gateway_hop_by_hop.py).
    assert forwarded["X-Secret-Hop"] == "drop-me" and "Connection" not in forwarded
    assert forwarded["X-Request-ID"]
    # A caller who goes around the gateway meets the same verification in the service itself.
    header, payload, signature = token.split(".")
    forged = f"{header}.{TokenMint().token(roles=('hq_admin',)).split('.')[1]}.{signature}"
    direct = await call(http, "POST", catalog_url + "/catalog/products", json={"name": "x", "category": "y"},
                        headers=bearer(forged))
    assert direct[0] == 401


async def test_jwks_is_refetched_for_a_new_key_id(http, monkeypatch):
    """Key rotation: a token signed with a key published after the gateway cached the JWKS is accepted."""
    import libs.auth
    from tests.integration.gateway.gateway_kit import jwks_server
    monkeypatch.setattr(libs.auth, "JWKS_MIN_REFRESH_S", 0)  # the 10 s refetch floor is not under test here
    old, new = TokenMint(), TokenMint()
    published = [old]
    async with jwks_server(published=published) as rotated_jwks, recording_upstream() as (orders_url, _), \
            running_gateway(rotated_jwks, orders_url=orders_url) as gateway:
        before = await call(http, "GET", gateway + PROTECTED, headers=bearer(new.token()))
        first = await call(http, "GET", gateway + PROTECTED, headers=bearer(old.token()))
        published.append(new)
        second = await call(http, "GET", gateway + PROTECTED, headers=bearer(new.token()))
    assert before[0] == 401 and before[1]["detail"] == "token signed by an unknown key"
    assert first[0] == 200 and second[0] == 200


async def test_service_tokens_are_refused_at_the_front_door(signing_key, jwks_url, http):
    # As membership issues them (audience: one called service), and forged with the API audience.
    issued = bearer(signing_key.token(sub="svc:orders", roles=("service",), aud="o2o-service:catalog",
                                      scope="catalog:quote"))
    forged = bearer(signing_key.token(sub="svc:orders", roles=("service",)))
    async with recording_upstream() as (catalog_url, seen), running_gateway(jwks_url, catalog_url=catalog_url) as gateway:
        answers = [await call(http, method, gateway + "/api/v1/catalog/products", json={}, headers=token)
                   for token in (issued, forged) for method in ("GET", "POST")]
        anonymous = await call(http, "GET", gateway + "/api/v1/catalog/products")
    assert [answer[0] for answer in answers] == [401] * 4
    assert "service tokens" in answers[3][1]["detail"]
    assert anonymous[0] == 200 and len(seen.requests) == 1


async def test_keys_unreachable_fails_closed_with_503(signing_key, http):
    """Without membership's keys nothing is verified, so nothing passes: 503 with Retry-After, not 500, not 200.
    Anonymous browsing needs no key and goes on."""
    async with recording_upstream() as (upstream, seen), \
            running_gateway("http://127.0.0.1:9/auth/jwks", orders_url=upstream, catalog_url=upstream) as gateway:
        answer = await call(http, "GET", gateway + PROTECTED, headers=bearer(signing_key.token()))
        browsing = await call(http, "GET", gateway + "/api/v1/catalog/products")
    assert answer[0] == 503 and answer[1]["type"].endswith("/auth-unavailable")
    assert int(answer[2]["Retry-After"]) >= 1
    assert seen.count("GET", "/orders/ord_someone") == 0
    assert browsing[0] == 200
