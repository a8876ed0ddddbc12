"""The gateway: one safe front door that routes /api/v1/<service>/... to the owning service.

For every request, in this order (cheapest refusals first):
1. request limits: URL and header size (414 / 431), declared body size (413);
2. a token bucket per client IP;
3. path hygiene: no dot segments or encoded slashes (400); internal routes and unknown segments are 404;
4. the bearer token, if any, verified (401) with libs.auth.TokenVerifier, then the route policy (401 / 403);
5. buckets per principal; stricter ones on login, OTP and pickup-code routes; one order in flight per member;
6. the upstream's circuit breaker (503 + Retry-After while open);
7. the pass-through: bodies stream both ways without being parsed (a chunked body is counted and cut at the
   size limit), the token is forwarded unchanged so the service verifies it again, pooled keep-alive
   connections, a timeout per route (504), an unreachable upstream is 503. A service with several replicas
   (libs.replicas) is called round-robin; a replica that refuses the connection is skipped and the call goes
   to the next one (any method: nothing was sent), and so does a body-less idempotent call whose replica
   broke off mid-request.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from libs.auth import Principal, TokenVerifier
from libs.http import (CORRELATION_HEADER, READINESS_CHECKS, REQUEST_ID_HEADER, SETTINGS, context_middleware,
                       json_response, readyz)
from libs.logging import bind_contextvars, get_logger
from libs.problems import Problem
from libs.replicas import IDEMPOTENT_METHODS, ReplicaPool
from services.gateway import metrics
from services.gateway.addresses import address_key, client_address, parse_networks
from services.gateway.breaker import BreakerState, CircuitBreaker
from services.gateway.docs import aggregate, fetch_documents, render_html
from services.gateway.operations import internal_app, mark_replica, poll_revocations, probe_replicas, probe_services
from services.gateway.limits import LOGIN_BODY_MAX_BYTES, TARGET_FIELDS, login_target, takes
from services.gateway.policy import (BREAKER_CLASSES, Access, LimitClass, RoutePolicy, breaker_class, breaker_name,
                                     has_dot_segment, is_internal, match)
from services.gateway.revocations import Revocations
from services.gateway.ratelimit import BucketRule, InFlightGate, RateLimiter, retry_after_header
from services.gateway.routing import API_PREFIX, resolve
from services.gateway.settings import GatewaySettings
from services.gateway.tokens import VerifiedTokens

log = get_logger("gateway")

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "trailers", "transfer-encoding", "upgrade", "host", "content-length"})
# Set by the gateway itself; what a client sends under these names is dropped, never trusted.
GATEWAY_SET = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"})
DROPPED_UPSTREAM = HOP_BY_HOP | GATEWAY_SET
CORS_ALLOWED_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
CORS_ALLOWED_HEADERS = ("authorization", "content-type", "idempotency-key", "x-request-id", "x-correlation-id",
                        "accept", "accept-language")
CORS_EXPOSED_HEADERS = "X-Request-ID, Retry-After, Location"
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
STREAM_CHUNK = 64 * 1024
# An upstream answer whose Content-Length is at most this is read whole and answered as one plain response
# (one write, no chunked streaming machinery); larger or unsized answers are streamed.
SMALL_BODY_BYTES = 64 * 1024
OUTCOMES = ("ok", "client_error", "server_error", "timeout", "unreachable")


class BodyTooLarge(Exception):
    """A chunked request body grew past the limit while streaming to the upstream."""


@dataclass
class GatewayState:
    settings: GatewaySettings
    verifier: TokenVerifier
    limiter: RateLimiter
    order_gate: InFlightGate
    breakers: dict[str, CircuitBreaker]
    rules: dict[str, BucketRule]
    verified: VerifiedTokens
    proxies: tuple = ()  # trusted proxy networks (addresses.parse_networks)
    revocations: Revocations = field(default_factory=Revocations)
    docs_cache: dict = field(default_factory=dict)  # {"at": monotonic, "document": dict}
    session: aiohttp.ClientSession | None = None
    # Built once: the hot path does no settings lookups, label formatting or timeout construction per request.
    pools: dict[str, ReplicaPool] = field(default_factory=dict)  # service -> its replicas
    in_flight: dict = field(default_factory=dict)   # service -> UPSTREAM_IN_FLIGHT child
    latency: dict = field(default_factory=dict)     # (service, outcome) -> UPSTREAM_LATENCY child
    timeouts: dict = field(default_factory=dict)    # policy timeout_s (or None) -> aiohttp.ClientTimeout

    def timeout_for(self, timeout_s: float | None) -> aiohttp.ClientTimeout:
        timeout = self.timeouts.get(timeout_s)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=timeout_s or self.settings.upstream_timeout_s,
                                            connect=self.settings.upstream_connect_timeout_s)
            self.timeouts[timeout_s] = timeout
        return timeout


STATE = web.AppKey("gateway_state", GatewayState)


def _on_breaker_change(service: str, state: BreakerState) -> None:
    metrics.BREAKER_STATE.labels(service).set(state.value)
    metrics.BREAKER_TRANSITIONS.labels(service, state.name.lower()).inc()
    log.warning("gateway.breaker_state", upstream=service, state=state.name.lower())


def _bucket_rules(settings: GatewaySettings) -> dict[str, BucketRule]:
    rates = {
        "ip": (settings.rate_ip_per_s, settings.rate_ip_burst),
        "principal": (settings.rate_principal_per_s, settings.rate_principal_burst),
        "login_ip": (settings.rate_login_ip_per_s, settings.rate_login_ip_burst),
        "login_target": (settings.rate_login_target_per_s, settings.rate_login_target_burst),
        "login_pair": (settings.rate_login_pair_per_s, settings.rate_login_pair_burst),
        "otp_send": (settings.rate_otp_send_per_s, settings.rate_otp_send_burst),
        "pickup_order": (settings.rate_pickup_order_per_s, settings.rate_pickup_order_burst),
        "pickup_store": (settings.rate_pickup_store_per_s, settings.rate_pickup_store_burst),
        "order_member": (settings.rate_order_per_s, settings.rate_order_burst),
    }
    return {name: BucketRule(name, rate, burst) for name, (rate, burst) in rates.items()}


def _rate_limited(bucket: str, wait_s: float, detail: str) -> Problem:
    metrics.RATE_LIMITED.labels(bucket).inc()
    return Problem(429, "rate-limited", detail, headers={"Retry-After": retry_after_header(wait_s)})


def _take(state: GatewayState, bucket: str, key: str, detail: str) -> None:
    wait = state.limiter.take(state.rules[bucket], key)
    if wait > 0:
        raise _rate_limited(bucket, wait, detail)


def client_ip(request: web.Request, state: GatewayState) -> str:
    return client_address(request.remote, request.headers.get("X-Forwarded-For"), state.proxies)


# --- middlewares and response decoration ---------------------------------------------------------------

@web.middleware
async def request_limits_middleware(request: web.Request, handler):
    settings: GatewaySettings = request.app[SETTINGS]  # type: ignore[assignment]
    if len(request.raw_path) > settings.max_url_bytes:
        metrics.REJECTED.labels("url_too_long").inc()
        raise Problem(414, "uri-too-long", f"the URL is longer than {settings.max_url_bytes} bytes",
                      title="URI Too Long")
    header_bytes = sum(len(k) + len(v) + 4 for k, v in request.raw_headers)
    if header_bytes > settings.max_header_bytes:
        metrics.REJECTED.labels("headers_too_large").inc()
        raise Problem(431, "headers-too-large", f"request headers exceed {settings.max_header_bytes} bytes",
                      title="Request Header Fields Too Large")
    if request.content_length is not None and request.content_length > settings.max_body_bytes:
        metrics.REJECTED.labels("body_too_large").inc()
        raise Problem(413, "payload-too-large", f"request body exceeds {settings.max_body_bytes} bytes",
                      max_bytes=settings.max_body_bytes)
    return await handler(request)


@web.middleware
async def cors_preflight_middleware(request: web.Request, handler):
    origin = request.headers.get("Origin")
    if request.method != "OPTIONS" or not origin or "Access-Control-Request-Method" not in request.headers:
        return await handler(request)
    settings: GatewaySettings = request.app[SETTINGS]  # type: ignore[assignment]
    if origin not in settings.cors_origins:
        metrics.REJECTED.labels("cors_origin").inc()
        raise Problem(403, "cors-origin-denied", "this origin may not call the API from a browser")
    asked = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")
             if h.strip()]
    refused = [h for h in asked if h not in CORS_ALLOWED_HEADERS]
    if refused:
        raise Problem(403, "cors-header-denied", f"headers not allowed cross-origin: {', '.join(refused)}")
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": CORS_ALLOWED_METHODS,
        "Access-Control-Allow-Headers": ", ".join(CORS_ALLOWED_HEADERS),
        "Access-Control-Max-Age": str(settings.cors_max_age_s),
    })


async def decorate_response(request: web.Request, response: web.StreamResponse) -> None:
    """Security headers and CORS on every answer, including problems and streamed pass-through answers."""
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        headers[name] = value
    headers.setdefault("Content-Security-Policy", API_CSP)
    headers.setdefault("Cache-Control", "no-store")
    headers["Server"] = "o2o-gateway"
    # The kit's middleware adds the request id after the handler returns: too late for a streamed answer.
    if "request_id" in request:
        headers[REQUEST_ID_HEADER] = request["request_id"]
    origin = request.headers.get("Origin")
    settings: GatewaySettings = request.app[SETTINGS]  # type: ignore[assignment]
    if origin and origin in settings.cors_origins:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
    if settings.cors_origins:
        headers.add("Vary", "Origin")


# --- the pass-through -----------------------------------------------------------------------------------

async def _authenticate(request: web.Request, state: GatewayState) -> Principal | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    if len(request.headers.getall("Authorization")) > 1:
        # The service must see the very token the gateway judged, not another one sent beside it.
        metrics.AUTH_FAILURES.labels("invalid-token").inc()
        raise Problem(400, "invalid-token", "send one Authorization header")
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "invalid-token", "Authorization must be 'Bearer <token>'",
                          headers={"WWW-Authenticate": "Bearer"})
        token = token.strip()
        principal = state.verified.get(token)
        if principal is None:
            principal = await state.verifier.verify(token)
            state.verified.put(token, principal)
    except Problem as problem:
        metrics.AUTH_FAILURES.labels(problem.type).inc()
        if problem.status == 401:
            problem.headers.setdefault("WWW-Authenticate", 'Bearer error="invalid_token"')
        raise
    if state.revocations.revoked(principal):
        metrics.AUTH_FAILURES.labels("token-revoked").inc()
        raise Problem(401, "token-revoked", "this login has ended; log in again",
                      headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    bind_contextvars(principal=principal.subject)
    return principal


def _authorize(policy: RoutePolicy, principal: Principal | None) -> None:
    if principal is not None and "service" in principal.roles:
        # Service tokens open every service's internal door; outside the internal network one can only be a
        # leaked one, so the front door never honours it, whatever the route.
        metrics.AUTH_FAILURES.labels("service-token").inc()
        raise Problem(403, "forbidden", "service tokens are not accepted from outside")
    if policy.access is Access.PUBLIC:
        return
    if principal is None:
        metrics.AUTH_FAILURES.labels("unauthorized").inc()
        raise Problem(401, "unauthorized", "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    if policy.access is Access.ROLES and not principal.has(*policy.roles):
        metrics.AUTH_FAILURES.labels("forbidden").inc()
        raise Problem(403, "forbidden", f"requires one of the roles: {', '.join(sorted(policy.roles))}")


async def _capped(stream: aiohttp.StreamReader, limit: int, overflow: list[bool]) -> AsyncIterator[bytes]:
    """Stream a body without Content-Length, refusing it once it passes `limit` bytes."""
    seen = 0
    async for chunk in stream.iter_chunked(STREAM_CHUNK):
        seen += len(chunk)
        if seen > limit:
            overflow.append(True)
            raise BodyTooLarge()
        yield chunk


def _too_large(settings: GatewaySettings) -> Problem:
    metrics.REJECTED.labels("body_too_large").inc()
    return Problem(413, "payload-too-large", f"request body exceeds {settings.max_body_bytes} bytes",
                   max_bytes=settings.max_body_bytes)


def _upstream_headers(request: web.Request, state: GatewayState) -> CIMultiDict:
    # Only the fixed hop-by-hop set is dropped, never what a client lists in `Connection`: naming
    # `Connection: Authorization` must not make the service see an anonymous caller after the gateway
    # authenticated the token (nor hide any other end-to-end header the gateway judged).
    headers = CIMultiDict([(k, v) for k, v in request.headers.items() if k.lower() not in DROPPED_UPSTREAM])
    headers[REQUEST_ID_HEADER] = request["request_id"]
    headers[CORRELATION_HEADER] = request["correlation_id"]
    headers["X-Forwarded-For"] = client_ip(request, state)
    headers["X-Forwarded-Proto"] = request.scheme
    if request.body_exists and request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    return headers


async def proxy(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    settings = state.settings
    path, raw_path = request.path, request.rel_url.raw_path
    ip = address_key(client_ip(request, state))
    _take(state, "ip", ip, "too many requests from this address")  # scans of unknown paths count too
    if has_dot_segment(path) or "\\" in path or "%2f" in raw_path.lower() or "%5c" in raw_path.lower():
        metrics.REJECTED.labels("bad_path").inc()
        raise Problem(400, "bad-path", "dot segments and encoded slashes are not accepted in API paths")
    target = resolve(path)
    if target is None or not raw_path.startswith(API_PREFIX + "/"):
        metrics.REJECTED.labels("no_route").inc()
        raise Problem(404, "not-found", f"no API route for {path}")
    if is_internal(path):
        metrics.REJECTED.labels("internal_route").inc()
        raise Problem(404, "not-found", f"no API route for {path}")
    service, upstream_path = target

    policy, params = match(request.method, upstream_path)
    if policy.access is Access.DENIED:
        metrics.REJECTED.labels("internal_route").inc()
        raise Problem(404, "not-found", f"no API route for {path}")
    principal = await _authenticate(request, state)
    _authorize(policy, principal)
    if principal is not None:
        _take(state, "principal", principal.subject, "too many requests for this caller")

    body: bytes | None = None
    if policy.limit in TARGET_FIELDS:
        body = await _login_body(request)
    for take in takes(policy.limit, address=ip, principal=principal, params=params,
                      target=login_target(policy.limit, body or b"")):
        _take(state, take.bucket, take.key, "too many attempts; wait before trying again")
    gate_key: str | None = None
    if policy.limit is LimitClass.ORDER_CREATE and principal is not None:
        member = principal.member_id or principal.subject
        _take(state, "order_member", member, "too many orders from this member; wait before trying again")
        if not state.order_gate.try_enter(member):
            raise _rate_limited("order_in_flight", 1.0, "an order from this member is already being placed")
        gate_key = member
    try:
        return await _forward(request, state, service, upstream_path, raw_path, policy, body)
    finally:
        if gate_key is not None:
            state.order_gate.leave(gate_key)


async def _login_body(request: web.Request) -> bytes:
    """A login route's body, read whole (it is a few short fields) so its target can key the buckets."""
    if request.content_length is not None and request.content_length > LOGIN_BODY_MAX_BYTES:
        raise Problem(413, "payload-too-large", f"a login body is at most {LOGIN_BODY_MAX_BYTES} bytes",
                      max_bytes=LOGIN_BODY_MAX_BYTES)
    body = bytearray()
    async for chunk in request.content.iter_chunked(STREAM_CHUNK):
        body += chunk
        if len(body) > LOGIN_BODY_MAX_BYTES:
            raise Problem(413, "payload-too-large", f"a login body is at most {LOGIN_BODY_MAX_BYTES} bytes",
                          max_bytes=LOGIN_BODY_MAX_BYTES)
    return bytes(body)


async def _forward(request: web.Request, state: GatewayState, service: str, upstream_path: str, raw_path: str,
                   policy: RoutePolicy, read_body: bytes | None = None) -> web.StreamResponse:
    settings = state.settings
    breaker = state.breakers[breaker_name(service, breaker_class(policy))]
    wait = breaker.before_call()
    if wait is not None:
        metrics.BREAKER_REFUSED.labels(breaker.name).inc()
        raise Problem(503, "upstream-unavailable", f"{service} is failing; calls are paused",
                      headers={"Retry-After": retry_after_header(wait)})

    raw_query = request.rel_url.raw_query_string
    tail = raw_path[len(API_PREFIX):] + (f"?{raw_query}" if raw_query else "")
    overflow: list[bool] = []
    body = read_body
    if read_body is None and request.body_exists:
        body = request.content if request.content_length is not None else _capped(
            request.content, settings.max_body_bytes, overflow)
    # After a replica broke off mid-request the call may go to another only if sending it again is harmless
    # and possible (a streamed body is gone); after a refused connection nothing was sent, so always.
    resendable = request.method in IDEMPOTENT_METHODS and not request.body_exists
    timeout = state.timeout_for(policy.timeout_s)
    headers = _upstream_headers(request, state)
    pool = state.pools[service]
    assert state.session is not None
    started = time.perf_counter()
    in_flight = state.in_flight[service]
    in_flight.inc()
    try:
        candidates = pool.candidates()
        for attempt, base in enumerate(candidates, start=1):
            try:
                upstream = await state.session.request(request.method, URL(base + tail, encoded=True),
                                                       headers=headers, data=body, allow_redirects=False,
                                                       timeout=timeout)
                break
            except asyncio.CancelledError:
                # Told nothing about the upstream, but a half-open breaker's trial slot must be given back.
                breaker.record_abandoned()
                raise
            except asyncio.TimeoutError:
                state.latency[service, "timeout"].observe(time.perf_counter() - started)
                breaker.record_failure()
                raise Problem(504, "upstream-timeout", f"{service} did not answer in time") from None
            except aiohttp.ClientError as exc:
                if overflow:
                    breaker.record_abandoned()
                    raise _too_large(settings) from None
                mark_replica(pool, base, up=False)
                refused = isinstance(exc, aiohttp.ClientConnectorError)
                if attempt < len(candidates) and (refused or resendable):
                    metrics.UPSTREAM_RETRIES.labels(service, "refused" if refused else "broken").inc()
                    continue
                state.latency[service, "unreachable"].observe(time.perf_counter() - started)
                breaker.record_failure()
                raise Problem(503, "upstream-unavailable", f"{service} is unreachable: {type(exc).__name__}",
                              headers={"Retry-After": "2"}) from None
            except Exception:
                breaker.record_abandoned()
                raise
        if pool.is_down(base):
            mark_replica(pool, base, up=True)
        outcome = "ok" if upstream.status < 400 else "client_error" if upstream.status < 500 else "server_error"
        state.latency[service, outcome].observe(time.perf_counter() - started)
        if upstream.status in (502, 503, 504):
            breaker.record_failure()
        else:
            breaker.record_success()
        try:
            if overflow:
                raise _too_large(settings)
            return await _stream_back(request, upstream, service)
        finally:
            upstream.release()
    finally:
        in_flight.dec()


DROPPED_DOWNSTREAM = HOP_BY_HOP | {REQUEST_ID_HEADER.lower(), "server"}


def _answer_headers(upstream: aiohttp.ClientResponse) -> CIMultiDict:
    # The gateway is the one authority on CORS and identity headers of the answer.
    return CIMultiDict([(key, value) for key, value in upstream.headers.items()
                        if (lowered := key.lower()) not in DROPPED_DOWNSTREAM
                        and not lowered.startswith("access-control-")])


async def _stream_back(request: web.Request, upstream: aiohttp.ClientResponse, service: str) -> web.StreamResponse:
    length = upstream.content_length
    if length is not None and length <= SMALL_BODY_BYTES and request.method != "HEAD":
        # A small answer: read whole, then one plain response (no chunked streaming machinery).
        try:
            body = await upstream.read()
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            log.warning("gateway.upstream_broke_mid_answer", upstream=service, error=type(exc).__name__)
            if isinstance(exc, asyncio.TimeoutError):
                raise Problem(504, "upstream-timeout", f"{service} did not answer in time") from None
            raise Problem(503, "upstream-unavailable", f"{service} broke off its answer: {type(exc).__name__}",
                          headers={"Retry-After": "2"}) from None
        return web.Response(status=upstream.status, reason=upstream.reason, body=body,
                            headers=_answer_headers(upstream))
    response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=_answer_headers(upstream))
    if length is not None:
        response.content_length = length
    try:
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(STREAM_CHUNK):
            await response.write(chunk)
        await response.write_eof()
    except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
        # Headers are gone already: the only honest signal left is to cut the connection, so the client
        # never takes a truncated body for a complete one.
        log.warning("gateway.upstream_broke_mid_answer", upstream=service, error=type(exc).__name__)
        if request.transport is not None:
            request.transport.abort()
    except ConnectionError:
        pass  # the client went away
    return response


# --- gateway's own endpoints -----------------------------------------------------------------------------

async def aggregated_health(request: web.Request) -> web.Response:
    """The public health: up or down per service, nothing more (no checks, error names or breaker states:
    those are on the internal listener)."""
    results = await probe_services(request.app[STATE])
    services = {name: {"status": "up" if r["status"] == "up" else "down"} for name, r in results.items()}
    all_up = all(r["status"] == "up" for r in services.values())
    return json_response({"status": "ok" if all_up else "degraded", "services": services})


async def _aggregated_document(state: GatewayState) -> dict:
    cached = state.docs_cache
    if cached and time.monotonic() - cached["at"] < state.settings.docs_cache_s:
        return cached["document"]
    assert state.session is not None
    documents = await fetch_documents(state.session, {name: pool.candidates()[0] for name, pool in state.pools.items()},
                                      state.settings.docs_fetch_timeout_s)
    for service, document in documents.items():
        metrics.DOCS_SOURCES.labels(service).set(0 if document is None else 1)
    document = aggregate(documents)
    state.docs_cache.update(at=time.monotonic(), document=document)
    return document


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(await _aggregated_document(request.app[STATE]))


async def openapi_page(request: web.Request) -> web.Response:
    page = render_html(await _aggregated_document(request.app[STATE]))
    return web.Response(text=page, content_type="text/html", headers={"Content-Security-Policy": DOCS_CSP})


async def _tune_gc(app: web.Application) -> None:
    """After start-up (startup hooks run after every cleanup context): move everything built so far (modules,
    the app, settings, policy table, pools) into the permanent generation, so collections scan only what
    requests allocate, and collect the young generation less often (`gc_gen0_threshold`)."""
    settings: GatewaySettings = app[SETTINGS]  # type: ignore[assignment]
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()
    if settings.gc_gen0_threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.gc_gen0_threshold, gen1, gen2)


def create_app(settings: GatewaySettings | None = None) -> web.Application:
    settings = settings or GatewaySettings()
    # aiohttp's own parser limits sit above ours, so an oversized URL or header gets our problem+json answer.
    handler_args = {"max_line_size": settings.max_url_bytes + 4096,
                    "max_field_size": max(8190, settings.max_header_bytes + 1024)}
    app = web.Application(middlewares=[context_middleware, request_limits_middleware, cors_preflight_middleware],
                          client_max_size=settings.max_body_bytes, handler_args=handler_args)
    app[SETTINGS] = settings
    app[READINESS_CHECKS] = {}
    breakers = {name: CircuitBreaker(name, settings.breaker_failure_threshold, settings.breaker_open_s,
                                     on_change=_on_breaker_change)
                for name in (breaker_name(service, group) for service in settings.upstreams()
                             for group in BREAKER_CLASSES)}
    for name in breakers:
        metrics.BREAKER_STATE.labels(name).set(BreakerState.CLOSED.value)
    state = GatewayState(settings=settings, verifier=TokenVerifier(settings),
                         limiter=RateLimiter(settings.rate_limit_max_keys),
                         order_gate=InFlightGate(settings.order_in_flight_per_member), breakers=breakers,
                         rules=_bucket_rules(settings),
                         verified=VerifiedTokens(settings.token_cache_s, settings.token_cache_entries),
                         proxies=parse_networks(settings.trusted_proxies))
    state.pools = {name: ReplicaPool(name, urls, settings.upstream_down_s)
                   for name, urls in settings.upstreams().items()}
    for name, pool in state.pools.items():
        for url in pool.urls:
            metrics.REPLICA_UP.labels(name, url).set(1)
        state.in_flight[name] = metrics.UPSTREAM_IN_FLIGHT.labels(name)
        for outcome in OUTCOMES:
            state.latency[name, outcome] = metrics.UPSTREAM_LATENCY.labels(name, outcome)
    app[STATE] = state

    async def upstream_pool(app: web.Application):
        connector = aiohttp.TCPConnector(limit=settings.pool_size, limit_per_host=settings.pool_size,
                                         keepalive_timeout=30, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s)
        state.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        prober = None
        if settings.upstream_probe_interval_s > 0 and any(len(pool) > 1 for pool in state.pools.values()):
            prober = asyncio.create_task(probe_replicas(state, settings.upstream_probe_interval_s),
                                         name="gateway-replica-probe")
        yield
        if prober is not None:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
        await state.session.close()
        await state.verifier.close()

    async def revocation_poller(app: web.Application):
        task = asyncio.create_task(poll_revocations(state)) if settings.revocation_poll_s > 0 else None
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def internal_listener(app: web.Application):
        if not settings.metrics_port:
            yield
            return
        runner = web.AppRunner(internal_app(state), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.metrics_port).start()
        yield
        await runner.cleanup()

    app.cleanup_ctx.append(upstream_pool)
    app.cleanup_ctx.append(internal_listener)
    app.cleanup_ctx.append(revocation_poller)
    app.on_startup.append(_tune_gc)
    app.on_response_prepare.append(decorate_response)
    app.router.add_get("/healthz", aggregated_health)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/docs", openapi_page)
    app.router.add_get("/api/docs/openapi.json", openapi_json)
    app.router.add_route("*", "/api/v1/{tail:.*}", proxy)
    return app
