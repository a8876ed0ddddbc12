"""The Idempotency-Key of a request, kept inside the order it created or paid (no separate record, so no
transaction joins the two): who asked, on which route, with which key (as one digest) and which body.

Stripe's rules, decided here on the stored order: same key and body, the stored answer; same key and
another body, 422; the first request still running, 409.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from libs.refusal import CONFLICT, INVALID, Refusal


@dataclass(frozen=True)
class RequestKey:
    digest: str      # sha256 of "<caller>|<method>|<path>|<key>": usable as a field name and an index value
    body_hash: str   # sha256 of the raw body

    @classmethod
    def of(cls, scope: str, body_hash: str) -> RequestKey:
        return cls(hashlib.sha256(scope.encode()).hexdigest(), body_hash)


def key_in_progress() -> Refusal:
    return Refusal("idempotency-conflict", "a request with this Idempotency-Key is in progress", kind=CONFLICT)


def key_reused() -> Refusal:
    return Refusal("idempotency-key-reused", "this Idempotency-Key was used with a different request body",
                   kind=INVALID)


def stored_answer(record: dict | None, key: RequestKey) -> tuple[int, dict] | None:
    """The answer kept for `key` (a record {body_hash, status?, body?}); None when there is none yet.
    Refuses another body under the same key, and a request still in flight."""
    if record is None:
        return None
    if record.get("body_hash") != key.body_hash:
        raise key_reused()
    if record.get("status") is None:
        raise key_in_progress()
    return record["status"], record["body"]
