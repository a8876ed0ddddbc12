"""The one test HTTP client: every call answers (status, body, headers); bodies are JSON or None."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    def __iter__(self):  # `status, body = await api.post(...)` reads naturally in tests
        return iter((self.status, self.body))

    def __getitem__(self, key):
        return self.body[key]


class ApiClient:
    def __init__(self, http: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None) -> None:
        self.http, self.base, self.headers = http, base.rstrip("/"), dict(headers or {})

    def with_headers(self, headers: dict[str, str]) -> ApiClient:
        return ApiClient(self.http, self.base, {**self.headers, **headers})

    async def call(self, method: str, path: str, json: Any = None, *, headers: dict[str, str] | None = None,
                   idempotency_key: str | None = None, **kw: Any) -> Reply:
        sent = {**self.headers, **(headers or {})}
        if idempotency_key:
            sent["Idempotency-Key"] = idempotency_key
        async with self.http.request(method, self.base + path, json=json, headers=sent, **kw) as response:
            raw = await response.read()
            body = await response.json(content_type=None) if raw else None
            return Reply(response.status, body, dict(response.headers))

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, json, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("PUT", path, json, **kw)

    async def patch(self, path: str, json: Any = None, **kw: Any) -> Reply:
        return await self.call("PATCH", path, json, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.call("DELETE", path, **kw)
