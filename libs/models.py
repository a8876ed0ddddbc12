"""Request models: what every service's handlers build their bodies and queries on."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A request body or query: unknown fields are refused (422), so a typo is never silently ignored."""

    model_config = ConfigDict(extra="forbid")


def fen(*, gt: int | None = 0, ge: int | None = None, le: int = 100_000_000, default=...):
    """A money field: integer fen, strictly (`"99"` or `99.5` are refused)."""
    return Field(default, gt=None if ge is not None else gt, ge=ge, le=le, strict=True)


CURSOR = Field(None, max_length=400, description="`next_cursor` of the previous page")
LIMIT = Field(20, ge=1, le=100, description="items per page (1 to 100)")
