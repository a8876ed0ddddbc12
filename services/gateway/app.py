"""The gateway: one entry point that routes /api/v1/<service>/... to the owning service.

Bodies stream both ways without being parsed; connections to upstreams are pooled and kept alive.
An upstream timeout answers 504 and an unreachable upstream 503, both as problem+json.
"""
from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from libs.http import CORRELATION_HEADER, REQUEST_ID_HEADER, SETTINGS, create_base_app, json_response
from libs.logging import get_logger
from libs.problems import Problem
from services.gateway.routing import resolve
from services.gateway.settings import GatewaySettings

UPSTREAM = web.AppKey("upstream_session", aiohttp.ClientSession)
log = get_logger("gateway")

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}


def _settings(app: web.Application) -> GatewaySettings:
    return app[SETTINGS]  # type: ignore[return-value]


async def proxy(request: web.Request) -> web.StreamResponse:
    target = resolve(request.path)
    if target is None:
        raise Problem(404, "not-found", f"no API route for {request.path}")
    service, upstream_path = target
    settings = _settings(request.app)
    base = settings.upstreams()[service]
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
    headers[REQUEST_ID_HEADER] = request["request_id"]
    headers[CORRELATION_HEADER] = request["correlation_id"]
    forwarded_for = request.headers.get("X-Forwarded-For")
    peer = request.remote or ""
    headers["X-Forwarded-For"] = f"{forwarded_for}, {peer}" if forwarded_for else peer
    body = request.content if request.body_exists else None
    session = request.app[UPSTREAM]
    try:
        upstream = await session.request(request.method, base + upstream_path, params=request.rel_url.query,
                                         headers=headers, data=body, allow_redirects=False)
    except asyncio.TimeoutError:
        raise Problem(504, "upstream-timeout", f"{service} did not answer in time") from None
    except aiohttp.ClientConnectionError as exc:
        raise Problem(503, "upstream-unavailable", f"{service} is unreachable: {type(exc).__name__}",
                      headers={"Retry-After": "2"}) from None
    try:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for key, value in upstream.headers.items():
            if key.lower() not in HOP_BY_HOP and key.lower() != REQUEST_ID_HEADER.lower():
                response.headers.add(key, value)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_chunked(64 * 1024):
            await response.write(chunk)
        await response.write_eof()
        return response
    except asyncio.TimeoutError:
        raise Problem(504, "upstream-timeout", f"{service} did not finish its answer in time") from None
    finally:
        upstream.release()


async def aggregated_health(request: web.Request) -> web.Response:
    """Health of the gateway and every service behind it (each service's /readyz)."""
    settings = _settings(request.app)
    session = request.app[UPSTREAM]

    async def probe(name: str, base: str) -> tuple[str, dict]:
        try:
            async with session.get(base + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as response:
                body = await response.json(content_type=None)
                return name, {"status": "up" if response.status == 200 else "degraded", "checks": body.get("checks")}
        except Exception as exc:
            return name, {"status": "down", "error": type(exc).__name__}

    results = dict(await asyncio.gather(*(probe(n, b) for n, b in settings.upstreams().items())))
    all_up = all(r["status"] == "up" for r in results.values())
    return json_response({"status": "ok" if all_up else "degraded", "service": "gateway", "services": results},
                         status=200)


def create_app(settings: GatewaySettings | None = None) -> web.Application:
    settings = settings or GatewaySettings()
    app = create_base_app(settings, client_max_size=settings.max_body_bytes, health_handler=aggregated_health)

    async def upstream_pool(app: web.Application):
        connector = aiohttp.TCPConnector(limit=settings.pool_size, limit_per_host=settings.pool_size,
                                         keepalive_timeout=30, ttl_dns_cache=300)
        timeout = aiohttp.ClientTimeout(total=settings.upstream_timeout_s, connect=settings.upstream_connect_timeout_s)
        app[UPSTREAM] = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)
        yield
        await app[UPSTREAM].close()

    app.cleanup_ctx.append(upstream_pool)
    app.router.add_route("*", "/api/v1/{tail:.*}", proxy)
    return app
