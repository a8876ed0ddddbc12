"""Opaque cursors and the list shape every API answers with: {"items": [...], "next_cursor": "…" | null}."""
from __future__ import annotations

import base64
import binascii
from typing import Any

from libs.problems import Problem


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The position a cursor stands for; a cursor this API did not issue is the client's mistake (400)."""
    if not cursor:
        return None
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise Problem(400, "bad-cursor", "cursor is not one this API issued") from None


def page_of(items: list[Any], last_key: str | None, limit: int) -> dict[str, Any]:
    """`items` fetched with limit + 1: the extra one only tells whether there is a next page."""
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(last_key) if more and last_key is not None else None}
