"""How notifications says no: refusals with a kind and a stable code (the kit answers them as problems)."""
from __future__ import annotations

from libs.refusal import CONFLICT, NOT_FOUND, Refusal


class NotificationError(Refusal):
    """A request notifications refuses (e.g. retrying a delivery that did not fail)."""

    default_kind = CONFLICT


def missing(what: str) -> NotificationError:
    return NotificationError("not-found", f"{what} not found", kind=NOT_FOUND)
