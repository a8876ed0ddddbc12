"""What the gateway does besides proxying: the health probes of the services behind it, the internal listener
(/metrics and the detailed health, never on the public port), and polling membership's revoked sessions."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from libs.clients import ServiceTokenProvider
from libs.http import json_response, metrics_endpoint
from libs.logging import get_logger
from libs.replicas import ReplicaPool
from services.gateway import metrics
from services.gateway.policy import BREAKER_CLASSES, breaker_name

if TYPE_CHECKING:
    from services.gateway.app import GatewayState

log = get_logger("gateway")
INTERNAL_STATE: web.AppKey[Any] = web.AppKey("gateway_internal_state", object)


async def probe_services(state: GatewayState) -> dict[str, dict]:
    """Each service's /readyz, with the state of its breakers; a down service is reported, not raised."""
    assert state.session is not None

    def breakers(name: str) -> dict[str, str]:
        return {group: state.breakers[breaker_name(name, group)].state.name.lower() for group in BREAKER_CLASSES}

    async def probe(name: str, base: str) -> tuple[str, dict]:
        try:
            async with state.session.get(base + "/readyz", timeout=aiohttp.ClientTimeout(total=2)) as response:
                body = await response.json(content_type=None)
                return name, {"status": "up" if response.status == 200 else "degraded",
                              "checks": body.get("checks") if isinstance(body, dict) else None,
                              "breaker": breakers(name)["default"], "breakers": breakers(name)}
        except Exception as exc:
            return name, {"status": "down", "error": type(exc).__name__, "breaker": breakers(name)["default"],
                          "breakers": breakers(name)}

    async def service_health(name: str, urls: list[str]) -> tuple[str, dict]:
        replicas = [(await probe(name, url))[1] for url in urls]
        if len(replicas) == 1:
            return name, replicas[0]
        up = sum(replica["status"] == "up" for replica in replicas)
        status = "up" if up == len(replicas) else "degraded" if up else replicas[0]["status"]
        return name, {**replicas[0], "status": status,
                      "replicas": {url: replica["status"] for url, replica in zip(urls, replicas)}}

    return dict(await asyncio.gather(*(service_health(n, p.urls) for n, p in state.pools.items())))


async def detailed_health(request: web.Request) -> web.Response:
    """The internal health: every service's readiness checks, errors and breakers (internal listener only)."""
    results = await probe_services(request.app[INTERNAL_STATE])
    all_up = all(r["status"] == "up" for r in results.values())
    return json_response({"status": "ok" if all_up else "degraded", "service": "gateway", "services": results})


def internal_app(state: GatewayState) -> web.Application:
    """What only operators and Prometheus may see, on `metrics_port`: never routed by the public listener."""
    internal = web.Application()
    internal[INTERNAL_STATE] = state
    internal.router.add_get("/metrics", metrics_endpoint)
    internal.router.add_get("/healthz", detailed_health)
    return internal


REVOCATION_OVERLAP_MS = 60_000  # asked again each poll: membership replicas' clocks may differ a little


async def poll_revocations(state: GatewayState) -> None:
    """Keep the revoked sessions and accounts current. While membership cannot be asked, the last known list
    stays in force (a revocation is never forgotten early; a new one waits for the next good poll)."""
    assert state.session is not None
    settings = state.settings
    pool = state.pools["membership"]
    tokens = ServiceTokenProvider(",".join(pool.urls), "gateway", settings.client_secret)
    while True:
        try:
            base = pool.candidates()[0]
            since = max(0, state.revocations.latest_ms - REVOCATION_OVERLAP_MS)
            headers = {"Authorization": f"Bearer {await tokens.token(state.session, 'membership')}"}
            async with state.session.get(f"{base}/auth/internal/revocations", params={"since_ms": str(since)},
                                         headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as response:
                if response.status != 200:
                    raise aiohttp.ClientResponseError(response.request_info, (), status=response.status)
                body = await response.json()
            state.revocations.add(body["items"])
            state.revocations.prune(int(body["now_ms"]))
            metrics.REVOCATION_POLLS.labels("ok").inc()
            metrics.REVOCATIONS.set(len(state.revocations))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            metrics.REVOCATION_POLLS.labels("failed").inc()
            log.warning("gateway.revocations_unavailable", error=type(exc).__name__)
        await asyncio.sleep(settings.revocation_poll_s)


def mark_replica(pool: ReplicaPool, url: str, *, up: bool) -> None:
    if up:
        pool.mark_up(url)
    else:
        pool.mark_down(url)
    metrics.REPLICA_UP.labels(pool.name, url).set(1 if up else 0)


async def probe_replicas(state: GatewayState, interval_s: float) -> None:
    """Every replica of a service that has several: ready (/readyz 200) or marked down, so calls skip it."""
    assert state.session is not None
    probe_timeout = aiohttp.ClientTimeout(total=min(2.0, interval_s))

    async def probe(pool: ReplicaPool, url: str) -> None:
        try:
            async with state.session.get(url + "/readyz", timeout=probe_timeout) as response:
                ready = response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            ready = False
        mark_replica(pool, url, up=ready)

    while True:
        await asyncio.gather(*(probe(pool, url) for pool in state.pools.values() if len(pool) > 1
                               for url in pool.urls))
        await asyncio.sleep(interval_s)
