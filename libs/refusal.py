"""The one way a domain says no: a `Refusal` with a kind and a stable code. Pure: no I/O, no HTTP.

Domain modules raise refusals (usually through their own subclass, e.g. `StockError`); the kit's HTTP
middleware maps the kind to a status and answers problem+json with `type = <code>`. A domain therefore
never knows about status codes, and a consumer or job that calls the same use case sees the same refusal.
"""
from __future__ import annotations

from typing import Any

INVALID = "invalid"                  # the request cannot be honoured as asked (422)
BAD_REQUEST = "bad_request"          # the request is malformed (400)
CONFLICT = "conflict"                # the state of things forbids it now (409)
NOT_FOUND = "not_found"              # (404)
FORBIDDEN = "forbidden"              # the caller may not do this (403)
UNAUTHENTICATED = "unauthenticated"  # missing or bad credentials (401)
LIMITED = "limited"                  # too many attempts (429)
LOCKED = "locked"                    # locked after too many attempts (423)
PAYMENT_REQUIRED = "payment_required"  # the payment was declined (402)
GONE = "gone"                        # it existed and is over (410)
UNAVAILABLE = "unavailable"          # a dependency cannot answer now (503)
UPSTREAM_TIMEOUT = "upstream_timeout"  # a dependency did not answer in time (504)

KINDS = (INVALID, BAD_REQUEST, CONFLICT, NOT_FOUND, FORBIDDEN, UNAUTHENTICATED, LIMITED, LOCKED,
         PAYMENT_REQUIRED, GONE, UNAVAILABLE, UPSTREAM_TIMEOUT)


class Refusal(Exception):
    """A business rule refused the request. `code` becomes the problem type; `extensions` are added to it."""

    default_kind = CONFLICT

    def __init__(self, code: str, detail: str, *, kind: str | None = None, title: str | None = None,
                 retry_after_s: int | None = None, **extensions: Any) -> None:
        super().__init__(detail)
        self.kind = kind or self.default_kind
        if self.kind not in KINDS:
            raise ValueError(f"unknown refusal kind {self.kind!r}")
        self.code = code
        self.detail = detail
        self.title = title
        self.retry_after_s = retry_after_s
        self.extensions = extensions

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind}, {self.code!r}, {self.detail!r})"
