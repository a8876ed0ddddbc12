"""Stock domain core: reservation state machine and movement rules. Pure: no I/O."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from libs.refusal import CONFLICT, INVALID, Refusal

RESERVED, COMMITTED, RELEASED = "reserved", "committed", "released"
MOVEMENT_KINDS = ("receive", "sale", "adjust", "count", "transfer_out", "transfer_in", "return_to_stock")


class StockError(Refusal):
    """A stock rule refused the request; `code` becomes the problem type, the kind says how it is answered."""

    default_kind = CONFLICT


# --- reservations ----------------------------------------------------------------------------

def commit_outcome(status: str) -> bool:
    """True when a commit must change state; False when it already happened (idempotent replay)."""
    if status == RESERVED:
        return True
    if status == COMMITTED:
        return False
    raise StockError("reservation-released", "the reservation was released (cancelled or expired); "
                                             "its stock is no longer held")


def release_outcome(status: str) -> bool:
    """True when a release must change state; False when already released (idempotent replay)."""
    if status == RESERVED:
        return True
    if status == RELEASED:
        return False
    raise StockError("reservation-committed", "the reservation was committed: the goods have left")


def check_extendable(status: str) -> None:
    if status != RESERVED:
        raise StockError(f"reservation-{status}", f"only a held reservation can be extended (it is {status})")


def expiry_ms(now_ms: int, ttl_s: int) -> int:
    return now_ms + ttl_s * 1000


def is_expired(expires_at_ms: int, now_ms: int) -> bool:
    return expires_at_ms <= now_ms


# --- movements -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LevelChange:
    """How one movement changes a stock level (available moves with on-hand; reserved is untouched)."""
    on_hand: int = 0
    in_transit: int = 0
    variance: int | None = None  # counts only: counted minus what the system believed

    @property
    def needs_available(self) -> int:
        """The available quantity that must exist for the change (goods leaving must not be reserved)."""
        return max(0, -self.on_hand)


def plan_movement(kind: str, *, qty: int | None = None, delta: int | None = None, counted: int | None = None,
                  on_hand: int = 0, reserved: int = 0) -> LevelChange:
    """The level change of a movement at its location, or StockError when the rules refuse it."""
    if kind in ("receive", "transfer_in", "return_to_stock"):
        return LevelChange(on_hand=_positive(qty))
    if kind in ("sale", "transfer_out"):
        return LevelChange(on_hand=-_positive(qty))
    if kind == "adjust":
        if not delta:
            raise StockError("invalid-movement", "an adjustment needs a non-zero delta", kind=INVALID)
        return LevelChange(on_hand=delta)
    if kind == "count":
        if counted is None or counted < 0:
            raise StockError("invalid-movement", "a count needs counted >= 0", kind=INVALID)
        if counted < reserved:
            # Reserved units are promised to orders; the store must resolve them before the count lands,
            # otherwise available would go negative.
            raise StockError("count-below-reserved",
                             f"counted {counted} is below the {reserved} units reserved for orders")
        return LevelChange(on_hand=counted - on_hand, variance=counted - on_hand)
    raise StockError("invalid-movement", f"unknown movement kind {kind!r}", kind=INVALID)


def _positive(qty: int | None) -> int:
    if qty is None or qty <= 0:
        raise StockError("invalid-movement", "qty must be a positive integer", kind=INVALID)
    return qty


def crossed_below(before: int, after: int, reorder_point: int) -> bool:
    """True once, when available drops under the reorder point (not on every sale below it)."""
    return before >= reorder_point > after


class SoldOutMemo:
    """SKUs this process last saw exhausted for a mode (no location taking part in it had any to give),
    remembered for a short while.

    In a flash sale most requests come after the last unit is gone; with the memo they are answered from
    the order check alone instead of re-reading every location, level and capacity counter. Set only from
    a committed rejecting transaction, forgotten as soon as this process gives stock back, and trusted for
    `ttl_s` at most, so stock returned through another replica is seen within that time (the same as the
    buyer having asked a moment earlier).
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._until: dict[tuple[str, str], float] = {}

    def mark(self, sku_ids: list[str], mode: str) -> None:
        until = self.clock() + self.ttl_s
        for sku_id in sku_ids:
            self._until[(sku_id, mode)] = until

    def forget(self, sku_id: str) -> None:
        for mode in ("ship", "pickup", "in_store"):
            self._until.pop((sku_id, mode), None)

    def any_sold_out(self, sku_ids: list[str], mode: str) -> bool:
        now = self.clock()
        return any(self._until.get((sku_id, mode), 0) > now for sku_id in sku_ids)
