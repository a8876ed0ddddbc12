"""The aiohttp application factory every service (and the gateway) is built on."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pymongo.errors import DuplicateKeyError, PyMongoError

from libs import metrics
from libs.logging import bind_contextvars, clear_contextvars, get_logger
from libs.mongo import ConcurrencyConflict
from libs.problems import Problem, problem_response
from libs.refusal import Refusal
from libs.settings import ServiceSettings

SETTINGS = web.AppKey("settings", ServiceSettings)
READINESS_CHECKS = web.AppKey("readiness_checks", dict)
REQUEST_ID_HEADER = "X-Request-ID"
CORRELATION_HEADER = "X-Correlation-ID"

log = get_logger("http")
M = TypeVar("M", bound=BaseModel)


def request_id_of(request: web.Request) -> str:
    return request["request_id"]


def _route_label(request: web.Request) -> str:
    info = request.match_info
    route = info.route if info is not None else None
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    canonical = getattr(resource, "canonical", None)
    return canonical or "unmatched"


@web.middleware
async def context_middleware(request: web.Request, handler):
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex
    correlation_id = request.headers.get(CORRELATION_HEADER) or request_id
    request["request_id"] = request_id
    request["correlation_id"] = correlation_id[:128]
    clear_contextvars()
    service = request.app[SETTINGS].service_name
    bind_contextvars(service=service, request_id=request_id, correlation_id=request["correlation_id"])
    started = time.perf_counter()
    metrics.HTTP_IN_FLIGHT.labels(service).inc()
    status = 500
    try:
        response = await _answer_problems(request, handler)
        status = response.status
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
    finally:
        metrics.HTTP_IN_FLIGHT.labels(service).dec()
        elapsed = time.perf_counter() - started
        route = _route_label(request)
        metrics.HTTP_REQUESTS.labels(service, request.method, route, str(status)).inc()
        metrics.HTTP_LATENCY.labels(service, request.method, route).observe(elapsed)
        if route not in ("/metrics", "/healthz", "/readyz"):
            log.info("http.request", method=request.method, path=request.path, route=route, status=status,
                     duration_ms=round(elapsed * 1000, 2))


STATUS_OF_KIND = {"invalid": 422, "bad_request": 400, "conflict": 409, "not_found": 404, "forbidden": 403,
                  "unauthenticated": 401, "limited": 429, "locked": 423, "payment_required": 402, "gone": 410,
                  "unavailable": 503, "upstream_timeout": 504}


KIND_OF_STATUS = {status: kind for kind, status in STATUS_OF_KIND.items()}


def kind_of_status(status: int) -> str:
    """The refusal kind of another service's problem status (to pass a refusal on with its own words)."""
    return KIND_OF_STATUS.get(status, "unavailable" if status >= 500 else "invalid")


def problem_of_refusal(refusal: Refusal) -> Problem:
    """The one mapping from a domain refusal (a kind, a code) to an HTTP problem."""
    headers = {}
    if refusal.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, int(refusal.retry_after_s)))
    if refusal.kind == "unauthenticated":
        headers["WWW-Authenticate"] = "Bearer"
    return Problem(STATUS_OF_KIND[refusal.kind], refusal.code, refusal.detail, title=refusal.title,
                   headers=headers, **refusal.extensions)


async def _answer_problems(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem.response(request.path)
    except Refusal as refusal:
        return problem_of_refusal(refusal).response(request.path)
    except DuplicateKeyError:
        # A unique index decided a race between two requests that both passed their checks: the loser is told,
        # and a retry finds what the winner created.
        return Problem(409, "already-exists", "another request just created the same thing; read it or retry "
                                              "with other values").response(request.path)
    except ConcurrencyConflict:
        # Retried until the attempts ran out: the thing is hot right now, not broken. The client may retry.
        return Problem(503, "contention", "too many concurrent changes to the same thing; retry in a moment",
                       headers={"Retry-After": "1"}).response(request.path)
    except PyMongoError as exc:
        if exc.has_error_label("TransientTransactionError"):
            return Problem(503, "contention", "too many concurrent changes to the same thing; retry in a moment",
                           headers={"Retry-After": "1"}).response(request.path)
        log.exception("http.database_error", path=request.path)
        return Problem(503, "unavailable", "the database could not answer; retry in a moment",
                       headers={"Retry-After": "1"}).response(request.path)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return Problem(exc.status, detail=detail, headers=headers).response(request.path)
    except Exception:
        log.exception("http.unhandled_error", path=request.path)
        return Problem(500, detail="an unexpected error occurred; it has been logged").response(request.path)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": request.app[SETTINGS].service_name})


async def readyz(request: web.Request) -> web.Response:
    results: dict[str, Any] = {}
    ok = True
    for name, check in request.app[READINESS_CHECKS].items():
        try:
            await check()
            results[name] = "ok"
        except Exception as exc:  # a failing dependency is reported, not raised
            ok = False
            results[name] = f"down: {type(exc).__name__}: {exc}"[:200]
    body = {"status": "ready" if ok else "not_ready", "service": request.app[SETTINGS].service_name,
            "checks": results}
    if ok:
        return web.json_response(body)
    return problem_response(503, {"type": "https://o2o.example/problems/not-ready", "title": "Service Unavailable",
                                  "status": 503, "detail": "a dependency is not reachable", **body})


async def metrics_endpoint(_: web.Request) -> web.Response:
    body, content_type = metrics.render_latest()
    return web.Response(body=body, headers={"Content-Type": content_type})


def create_base_app(settings: ServiceSettings, *, client_max_size: int = 1024 ** 2,
                    middlewares: list | None = None, health_handler=None) -> web.Application:
    app = web.Application(middlewares=[context_middleware, *(middlewares or [])], client_max_size=client_max_size)
    app[SETTINGS] = settings
    app[READINESS_CHECKS] = {}
    app.router.add_get("/healthz", health_handler or healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    return app


def add_readiness_check(app: web.Application, name: str, check: Callable[[], Awaitable[Any]]) -> None:
    app[READINESS_CHECKS][name] = check


# --- request parsing: a client's mistake is a 4xx, never a 500 ---------------------------------

MAX_JSON_DEPTH = 32


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max([_depth(v, level + 1) for v in value.values()] or [level + 1])
    if isinstance(value, list):
        return max([_depth(v, level + 1) for v in value] or [level + 1])
    return level


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise Problem(400, "malformed-json", "request body is empty; a JSON document is required")
    try:
        document = json.loads(raw)
    except RecursionError:
        # The decoder recurses once per nesting level: a body of many brackets exhausts the stack before
        # our own depth check can look at it.
        raise Problem(400, "json-too-deep", f"JSON nesting deeper than {MAX_JSON_DEPTH}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, "malformed-json", f"request body is not valid JSON: {exc}") from None
    if _depth(document) > MAX_JSON_DEPTH:
        raise Problem(400, "json-too-deep", f"JSON nesting deeper than {MAX_JSON_DEPTH}")
    where = _unstorable(document)
    if where is not None:
        raise Problem(422, "unstorable-text", f"{where or 'body'}: text must be valid Unicode without NUL "
                                              "characters")
    return document


def _unstorable(value: Any, path: str = "") -> str | None:
    """Where the document holds text no database can store (lone surrogates, a NUL in a name)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in key or _unstorable(key, here) is not None:
                return here.encode("utf-8", "replace").decode()
            found = _unstorable(item, here)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _unstorable(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def validation_problem(exc: ValidationError) -> Problem:
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    summary = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors[:5])
    return Problem(422, "validation-error", summary, errors=errors)


async def parse_body(request: web.Request, model: type[M]) -> M:
    document = await read_json(request)
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise validation_problem(exc) from None


def parse_query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise validation_problem(exc) from None


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    return web.Response(status=status, body=json.dumps(data, ensure_ascii=False, default=str).encode(),
                        content_type="application/json", headers=headers)
