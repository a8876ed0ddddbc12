"""Membership's refusals: a stable code (the problem type) and a kind (the kit maps kinds to statuses)."""
from __future__ import annotations

from typing import Any

from libs.refusal import CONFLICT, FORBIDDEN, INVALID, LIMITED, NOT_FOUND, UNAUTHENTICATED, Refusal

__all__ = ["CONFLICT", "FORBIDDEN", "INVALID", "LIMITED", "NOT_FOUND", "UNAUTHENTICATED", "MembershipError"]


class MembershipError(Refusal):
    """A membership rule said no. `retry_after_s` is also kept as an extension: clients read it in the body."""

    default_kind = CONFLICT

    def __init__(self, code: str, detail: str, *, kind: str | None = None, retry_after_s: int | None = None,
                 **extensions: Any) -> None:
        super().__init__(code, detail, kind=kind, retry_after_s=retry_after_s, **extensions)
        if retry_after_s is not None:
            self.extensions["retry_after_s"] = retry_after_s
