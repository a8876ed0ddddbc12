"""Opaque cursors and the list shape every API answers with: {"items": [...], "next_cursor": "…" | null}.

One format everywhere: a cursor carries the list it belongs to (`scope`, e.g. "stock.levels"), the sort key
of the last item it covered, and a checksum. A cursor of another list, or one a client edited, is the
client's mistake and answered 400 `bad-cursor`, never a 500 and never a wrong page.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from libs.refusal import BAD_REQUEST, Refusal

_CURSOR_KEY = b"o2o-cursor-v1"  # integrity against edits and mix-ups, not a secret: keys are not confidential


def _checksum(scope: str, key: Any) -> str:
    material = json.dumps([scope, key], separators=(",", ":"), default=str).encode()
    return hashlib.blake2b(material, key=_CURSOR_KEY, digest_size=6).hexdigest()


def encode_cursor(key: str | int, scope: str = "") -> str:
    payload = json.dumps({"s": scope, "k": key, "c": _checksum(scope, key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def bad_cursor() -> Refusal:
    return Refusal("bad-cursor", "this cursor was not issued for this list; start again without a cursor "
                                 "and follow next_cursor", kind=BAD_REQUEST)


def decode_cursor(cursor: str | None, scope: str = "") -> Any:
    """The sort key a cursor stands for (None without a cursor)."""
    if not cursor:
        return None
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        payload = json.loads(raw.decode())
        key = payload["k"]
        valid = (isinstance(payload, dict) and payload.get("s") == scope and isinstance(key, str | int)
                 and not isinstance(key, bool) and payload.get("c") == _checksum(scope, key))
    except (ValueError, UnicodeDecodeError, binascii.Error, KeyError, TypeError):
        valid = False
    if not valid:
        raise bad_cursor() from None
    return key


def page_of(docs: Sequence[Any], limit: int, *, scope: str = "", key: Callable[[Any], Any] = lambda d: d["_id"],
            view: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """The answer for `docs` fetched with `limit + 1`: the extra one only tells whether there is a next page."""
    more = len(docs) > limit
    shown = list(docs[:limit])
    return {"items": [view(d) for d in shown] if view else shown,
            "next_cursor": encode_cursor(key(shown[-1]), scope) if more and shown else None}
