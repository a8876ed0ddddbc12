"""Synchronous calls between services (where a user is waiting): service token, timeout, problem passthrough.

A service authenticates to another with a short-lived service token from membership
(`POST /auth/service/token` with its client id, its own secret and the service it calls: the token is valid
there only, with the scopes libs.auth.SERVICE_GRANTS gives it). Internal endpoints
live under `/<service>/internal/...`; the gateway never routes them.

A service's URL may list several replicas, comma-separated (libs.replicas): calls go round-robin, and one
whose replica refuses the connection goes to the next (nothing was sent); a call whose replica broke off
mid-request is sent again only when its method is idempotent.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from libs.http import CORRELATION_HEADER, REQUEST_ID_HEADER
from libs.logging import get_logger
from libs.problems import Problem
from libs.replicas import IDEMPOTENT_METHODS, ReplicaPool
from structlog.contextvars import get_contextvars

log = get_logger("clients")


class UpstreamError(Exception):
    """Another service answered with a problem; `status` and `body` carry it."""

    def __init__(self, service: str, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{service} answered {status}: {body.get('detail') or body}")
        self.service = service
        self.status = status
        self.body = body

    @property
    def problem_type(self) -> str:
        return str(self.body.get("type", "")).rsplit("/", 1)[-1]


class ServiceTokenProvider:
    """This service's tokens, one per called service (each is accepted by that service only)."""

    def __init__(self, membership_url: str, client_id: str, client_secret: str) -> None:
        self.membership = ReplicaPool("membership", membership_url)
        self.client_id = client_id
        self.client_secret = client_secret
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = asyncio.Lock()

    def _cached(self, audience: str) -> str | None:
        token, expires_at = self._tokens.get(audience, (None, 0.0))
        return token if token and time.monotonic() < expires_at - 30 else None

    async def token(self, session: aiohttp.ClientSession, audience: str) -> str:
        if (token := self._cached(audience)) is not None:
            return token
        async with self._lock:
            if (token := self._cached(audience)) is not None:
                return token
            candidates = self.membership.candidates()
            for attempt, base in enumerate(candidates, start=1):
                try:
                    async with session.post(base + "/auth/service/token", json={
                            "client_id": self.client_id, "client_secret": self.client_secret,
                            "audience": audience}) as response:
                        body = await response.json(content_type=None)
                        status = response.status
                    break
                except aiohttp.ClientConnectionError:  # asking again for a token is harmless: the next replica
                    self.membership.mark_down(base)
                    if attempt == len(candidates):
                        raise
            if status != 200:
                raise UpstreamError("membership", status, body)
            self._tokens[audience] = (body["access_token"], time.monotonic() + float(body.get("expires_in", 300)))
            return body["access_token"]


class ServiceClient:
    """HTTP client of one upstream service with a per-call timeout and the caller's ids propagated."""

    def __init__(self, name: str, base_url: str, session: aiohttp.ClientSession,
                 tokens: ServiceTokenProvider | None = None, timeout_s: float = 3.0) -> None:
        self.name = name
        self.replicas = ReplicaPool(name, base_url)
        self.session = session
        self.tokens = tokens
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def request(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
                      headers: dict[str, str] | None = None, timeout_s: float | None = None) -> tuple[int, Any]:
        """Returns (status, body) for 2xx; raises UpstreamError for 4xx and Problem(503/504) when unavailable."""
        ctx = get_contextvars()
        sent = {REQUEST_ID_HEADER: ctx.get("request_id", ""), CORRELATION_HEADER: ctx.get("correlation_id", "")}
        sent = {k: v for k, v in sent.items() if v}
        if headers:
            sent.update(headers)
        timeout = aiohttp.ClientTimeout(total=timeout_s) if timeout_s else self.timeout
        try:
            if self.tokens is not None:
                sent["Authorization"] = "Bearer " + await self.tokens.token(self.session, self.name)
            candidates = self.replicas.candidates()
            for attempt, base in enumerate(candidates, start=1):
                try:
                    async with self.session.request(method, base + path, json=json, params=params,
                                                    headers=sent, timeout=timeout) as response:
                        body = await response.json(content_type=None) if response.content_length != 0 else None
                        status = response.status
                    break
                except aiohttp.ClientConnectionError as exc:
                    self.replicas.mark_down(base)
                    refused = isinstance(exc, aiohttp.ClientConnectorError)
                    if attempt == len(candidates) or not (refused or method in IDEMPOTENT_METHODS):
                        raise
            self.replicas.mark_up(base)
        except UpstreamError as exc:
            raise Problem(503, "upstream-unavailable", f"cannot authenticate to {self.name}: {exc}",
                          headers={"Retry-After": "2"}) from None
        except asyncio.TimeoutError:
            raise Problem(504, "upstream-timeout", f"{self.name} did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise Problem(503, "upstream-unavailable", f"{self.name} is unreachable: {type(exc).__name__}",
                          headers={"Retry-After": "2"}) from None
        if status >= 500:
            raise Problem(503, "upstream-unavailable", f"{self.name} failed with {status}",
                          headers={"Retry-After": "2"})
        if status >= 400:
            raise UpstreamError(self.name, status, body if isinstance(body, dict) else {"detail": str(body)})
        return status, body

    async def get(self, path: str, **kw) -> Any:
        return (await self.request("GET", path, **kw))[1]

    async def post(self, path: str, json: Any = None, **kw) -> Any:
        return (await self.request("POST", path, json=json, **kw))[1]
