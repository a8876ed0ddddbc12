"""Ids: a type prefix and a time-ordered body, so that sorting by `_id` is sorting by creation (cursor paging)."""
from __future__ import annotations

import os

from libs.clock import now_ms


def new_id(prefix: str) -> str:
    """`<prefix>_<12 hex of epoch ms><10 random hex>`, e.g. `ord_019a3f6c2b1e4f0c9d8a7b`."""
    return f"{prefix}_{now_ms():012x}{os.urandom(5).hex()}"
