"""RFC 9457 problem details: the only error shape the suite answers with."""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PROBLEM_BASE = "https://o2o.example/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"

_TITLES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large", 415: "Unsupported Media Type",
    422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}
_DEFAULT_TYPES = {
    400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
    409: "conflict", 413: "payload-too-large", 415: "unsupported-media-type", 422: "validation-error",
    429: "rate-limited", 500: "internal-error", 502: "bad-gateway", 503: "unavailable", 504: "upstream-timeout",
}


class Problem(Exception):
    """Raise anywhere in a handler to answer with a problem+json document."""

    def __init__(self, status: int, type_: str | None = None, detail: str = "", title: str | None = None,
                 headers: dict[str, str] | None = None, **extensions: Any) -> None:
        super().__init__(detail or type_ or str(status))
        self.status = status
        self.type = type_ or _DEFAULT_TYPES.get(status, "error")
        self.title = title or _TITLES.get(status, "Error")
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions

    def to_dict(self, instance: str | None = None) -> dict[str, Any]:
        body = {"type": PROBLEM_BASE + self.type, "title": self.title, "status": self.status,
                "detail": self.detail or self.title}
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body

    def response(self, instance: str | None = None) -> web.Response:
        return problem_response(self.status, self.to_dict(instance), self.headers)


def problem_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=json.dumps(body, ensure_ascii=False, default=str).encode(),
                        content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def not_found(what: str = "resource") -> Problem:
    return Problem(404, "not-found", f"{what} not found")


def conflict(type_: str, detail: str, **ext: Any) -> Problem:
    return Problem(409, type_, detail, **ext)
