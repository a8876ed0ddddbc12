"""Caller identity: JWT verification against membership's JWKS, shared by the gateway and every service.

Tokens are signed by membership with an asymmetric key (RS256/ES256). Only those algorithms are accepted
(never `none`, never HS*), `exp`, `iss` and `aud` are required, with a small clock skew. Services verify the
original token again, so an outsider cannot forge an identity by reaching a service directly.

People's tokens carry the API audience (settings.jwt_audience). A service token is issued for one called
service (audience `service_audience(name)`) with the scopes SERVICE_GRANTS gives its client there; the
called service accepts it only on routes that name one of those scopes, never where a person's role is asked.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from libs.logging import bind_contextvars, get_logger
from libs.principal import ROLES, Principal  # noqa: F401  (re-exported: the caller identity)
from libs.replicas import split_urls
from libs.problems import Problem
from libs.settings import ServiceSettings

ALLOWED_ALGORITHMS = ["RS256", "ES256"]
CLOCK_SKEW_S = 30
JWKS_MIN_REFRESH_S = 10
log = get_logger("auth")

# client id -> called service -> the scopes it holds there. The one table of who may call which internal route.
SERVICE_GRANTS: dict[str, dict[str, frozenset[str]]] = {
    "orders": {
        "catalog": frozenset({"catalog:quote"}),
        "stock": frozenset({"stock:reservations", "stock:returns"}),
        "membership": frozenset({"membership:checkout-holds", "membership:attribution", "membership:qr-codes"}),
    },
    "notifications": {
        "membership": frozenset({"membership:audiences", "membership:otp-codes"}),
        "orders": frozenset({"orders:pickup-codes"}),
    },
    "gateway": {
        "membership": frozenset({"membership:revocations"}),
    },
}


def service_audience(service: str) -> str:
    """The audience of a service token issued for calling `service`."""
    return f"o2o-service:{service}"


class TokenVerifier:
    """Verifies bearer tokens; JWKS cached and refreshed on an unknown kid (at most every 10 s)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.jwks_url = settings.jwks_url
        self.issuer = settings.jwt_issuer
        # People's tokens, and service tokens issued for calling this very service.
        self.audience = [settings.jwt_audience, service_audience(settings.service_name)]
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.verified: dict[bytes, tuple[float, Principal]] = {}  # see verify_cached

    def load_jwks(self, jwks: dict[str, Any]) -> None:
        keys = {}
        for jwk in jwks.get("keys", []):
            try:
                keys[jwk["kid"]] = jwt.PyJWK.from_dict(jwk)
            except (jwt.PyJWKError, KeyError) as exc:
                log.warning("auth.bad_jwk", error=str(exc))
        self._keys = keys

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < JWKS_MIN_REFRESH_S and self._keys:
                return
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
            # O2O_JWKS_URL may list membership's replicas, comma-separated: the first that answers.
            urls = split_urls(self.jwks_url)
            for attempt, url in enumerate(urls, start=1):
                try:
                    async with self._session.get(url) as response:
                        response.raise_for_status()
                        self.load_jwks(await response.json())
                    break
                except aiohttp.ClientConnectorError:
                    if attempt == len(urls):
                        raise
            self._fetched_at = time.monotonic()

    async def _key_for(self, kid: str):
        if kid not in self._keys:
            try:
                await self._refresh()
            except Exception as exc:
                log.warning("auth.jwks_unavailable", error=f"{type(exc).__name__}: {exc}")
                raise Problem(503, "auth-unavailable", "token keys cannot be fetched right now",
                              headers={"Retry-After": "2"}) from None
        key = self._keys.get(kid)
        if key is None:
            raise Problem(401, "invalid-token", "token signed by an unknown key")
        return key

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Problem(401, "invalid-token", "malformed token") from None
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise Problem(401, "invalid-token", "token algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Problem(401, "invalid-token", "token has no key id")
        key = await self._key_for(kid)
        if key.algorithm_name != header["alg"]:
            raise Problem(401, "invalid-token", "token algorithm does not match its key")
        try:
            claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience=self.audience,
                                issuer=self.issuer, leeway=CLOCK_SKEW_S,
                                options={"require": ["exp", "iat", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Problem(401, "token-expired", "token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Problem(401, "invalid-token", "token is not yet valid") from None
        except jwt.PyJWTError as exc:
            raise Problem(401, "invalid-token", f"token rejected: {exc}") from None
        principal = Principal.from_claims(claims)
        audiences = {claims["aud"]} if isinstance(claims["aud"], str) else set(claims["aud"])
        if principal.is_service == (self.audience[0] in audiences):
            raise Problem(401, "invalid-token", "service tokens carry a service audience and only service tokens do")
        return principal

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


VERIFIER = web.AppKey("token_verifier", TokenVerifier)
VERIFIED_CACHE_MAX = 20_000
VERIFIED_CACHE_MAX_AGE_S = 300


async def verify_cached(verifier: TokenVerifier, token: str) -> Principal:
    """`verifier.verify`, remembered per token until it expires (at most VERIFIED_CACHE_MAX_AGE_S): a client
    that sends the same token on every request pays one signature check, not one per request. Only tokens
    that verified are kept (by their digest); a refused one is checked again each time."""
    digest = hashlib.sha256(token.encode()).digest()
    now = time.time()
    known = verifier.verified.get(digest)
    if known is not None and now < known[0]:
        return known[1]
    principal = await verifier.verify(token)
    expires = jwt.decode(token, options={"verify_signature": False}).get("exp")
    if isinstance(expires, (int, float)):
        if len(verifier.verified) >= VERIFIED_CACHE_MAX:
            verifier.verified.clear()
        verifier.verified[digest] = (min(float(expires), now + VERIFIED_CACHE_MAX_AGE_S), principal)
    return principal


@web.middleware
async def auth_middleware(request: web.Request, handler):
    """Attach the verified principal (or None); routes decide what they require."""
    request["principal"] = None
    header = request.headers.get("Authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "invalid-token", "Authorization must be 'Bearer <token>'")
        principal = await verify_cached(request.app[VERIFIER], token.strip())
        request["principal"] = principal
        bind_contextvars(principal=principal.subject)
    return await handler(request)


def principal_of(request: web.Request) -> Principal | None:
    return request.get("principal")


def require(request: web.Request, *roles: str, scope: str | None = None) -> Principal:
    """The caller's principal, or 401 without a token and 403 without one of `roles` (if given).

    A service token passes only where the route names a `scope` it holds: the `service` role alone satisfies
    no role check, so a token minted for one purpose cannot do what a person (or another service) may."""
    principal = request.get("principal")
    if principal is None:
        raise Problem(401, "unauthorized", "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    if principal.is_service:
        if scope is None or not principal.has_scope(scope):
            raise Problem(403, "forbidden", f"this service token lacks the scope {scope}" if scope
                          else "service tokens are not accepted here")
        return principal
    if scope is not None and not roles:
        raise Problem(403, "forbidden", "an internal route: only a service token with its scope is accepted")
    if roles and not principal.has(*roles):
        raise Problem(403, "forbidden", f"requires one of the roles: {', '.join(roles)}")
    return principal


def dumps_jwks(keys: list[dict[str, Any]]) -> str:
    return json.dumps({"keys": keys})
