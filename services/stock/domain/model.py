"""Stock domain core: reservation state machine and movement rules. Pure: no I/O."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from libs.refusal import CONFLICT, FORBIDDEN, INVALID, Refusal

RESERVED, COMMITTED, RELEASED = "reserved", "committed", "released"
MOVEMENT_KINDS = ("receive", "sale", "adjust", "count", "transfer_out", "transfer_in", "return_to_stock")

# Why stock changed: a closed set, so the ledger can be audited and reported by cause (free words go in `note`).
REASON_CODES = ("damaged", "lost", "theft", "expired", "found", "count_correction", "receiving", "customer_return",
                "transfer", "sale")
# The reasons each kind accepts, its default first (None: the kind needs one named). An adjustment that
# removes goods names how they were lost; one that adds goods was found or corrects a count.
REASONS_OF_KIND: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "adjust": (None, ("damaged", "lost", "theft", "expired", "found", "count_correction")),
    "count": ("count_correction", ("count_correction",)),
    "receive": ("receiving", ("receiving", "found")),
    "return_to_stock": ("customer_return", ("customer_return",)),
    "sale": ("sale", ("sale",)),
    "transfer_out": ("transfer", ("transfer",)),
    "transfer_in": ("transfer", ("transfer",)),
}
REMOVING_REASONS = frozenset({"damaged", "lost", "theft", "expired"})
ADDING_REASONS = frozenset({"found"})
# The kinds whose units a store clerk may not move in bulk on their own word: above the threshold a manager of
# the store approves them (sales, transfers and reservations are bounded by documents and available stock).
APPROVAL_KINDS = frozenset({"adjust", "count", "receive", "return_to_stock"})


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


def reason_of(kind: str, reason: str | None, delta: int | None = None) -> str:
    """The reason code a movement is recorded with, or StockError when it does not fit the kind."""
    default, allowed = REASONS_OF_KIND[kind]
    reason = reason or default
    if reason is None:
        raise StockError("reason-required", f"a {kind} movement needs a reason code ({', '.join(allowed)})",
                         kind=INVALID, allowed=list(allowed))
    if reason not in allowed:
        raise StockError("invalid-reason", f"reason {reason!r} does not fit a {kind} movement "
                                           f"({', '.join(allowed)})", kind=INVALID, allowed=list(allowed))
    if kind == "adjust" and delta is not None:
        if reason in REMOVING_REASONS and delta > 0 or reason in ADDING_REASONS and delta < 0:
            raise StockError("invalid-reason", f"an adjustment for {reason!r} cannot "
                                               f"{'add' if delta > 0 else 'remove'} goods", kind=INVALID)
    return reason


def check_size(change: LevelChange, limit: int) -> None:
    """No single movement moves more than `limit` units: a typo or a forged request is not a ledger line."""
    if abs(change.on_hand) > limit:
        raise StockError("movement-too-large", f"one movement changes at most {limit} units "
                                               f"(this one {change.on_hand:+d})", kind=INVALID, limit=limit)


def needs_approval(kind: str, change: LevelChange, *, may_approve: bool, threshold: int) -> bool:
    """A clerk's adjustment, count, receipt or return above `threshold` units waits for a manager."""
    return not may_approve and kind in APPROVAL_KINDS and abs(change.on_hand) > threshold


PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


def decide_approval(approval: dict, decision: str, decider: str) -> None:
    """Approve or reject a pending movement; never twice, never by the clerk who asked for it."""
    if approval["status"] != PENDING:
        raise StockError("approval-decided", f"this movement was already {approval['status']}",
                         current_status=approval["status"])
    if approval["requested_by"] == decider:
        raise StockError("own-approval", "a movement is approved by another person than the one who asked",
                         kind=FORBIDDEN)
    approval["status"] = decision


def _positive(qty: int | None) -> int:
    if qty is None or qty <= 0:
        raise StockError("invalid-movement", "qty must be a positive integer", kind=INVALID)
    return qty


def crossed_below(before: int, after: int, reorder_point: int) -> bool:
    """True once, when available drops under the reorder point (not on every sale below it)."""
    return before >= reorder_point > after


FRESH, EXPIRED, UNKNOWN = "fresh", "expired", "unknown"


class SoldOutMemo:
    """What this process last saw sold out, remembered for a short while; used ONLY to refuse, never to
    accept (an entry that is not fresh sends the request to the database).

    Keys are (sku_id, mode, location_id): a named store (pickup / in_store) has its own entry, the ship
    mode's "exhausted everywhere" entry has location None. In a flash sale most requests come after the last
    unit is gone; with the memo they are refused without a read. Set only from a fresh read that showed
    nothing to give, forgotten as soon as this process gives stock back (a generation number per SKU lets a
    refresh that started before the give-back drop its answer), and trusted for `ttl_s` at most, so stock
    returned through another replica is seen within that time. An expired entry is kept (state EXPIRED) so
    that one request refreshes it while the others wait (single-flight, in the use case layer).
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._until: dict[tuple, float] = {}
        self._answers: dict[tuple, list] = {}
        self._generation: dict[str, int] = {}

    def generation(self, sku_id: str) -> int:
        return self._generation.get(sku_id, 0)

    def mark(self, sku_ids: list[str], mode: str, location_id: str | None = None, nearest: list | None = None,
             generation: dict[str, int] | None = None) -> None:
        until = self.clock() + self.ttl_s
        for sku_id in sku_ids:
            if generation is not None and generation.get(sku_id, 0) != self.generation(sku_id):
                continue  # stock was given back since the read that found it sold out
            self._until[(sku_id, mode, location_id)] = until
            self._answers[(sku_id, mode, location_id)] = list(nearest or [])

    def forget(self, sku_id: str) -> None:
        self._generation[sku_id] = self.generation(sku_id) + 1
        for key in [k for k in self._until if k[0] == sku_id]:
            self._until.pop(key, None)
            self._answers.pop(key, None)

    def drop(self, key: tuple) -> None:
        self._until.pop(key, None)
        self._answers.pop(key, None)

    def state(self, key: tuple) -> str:
        until = self._until.get(key)
        if until is None:
            return UNKNOWN
        return FRESH if until > self.clock() else EXPIRED

    def nearest(self, key: tuple) -> list:
        return list(self._answers.get(key, []))

    def any_sold_out(self, sku_ids: list[str], mode: str, location_id: str | None = None) -> bool:
        return any(self.state((sku_id, mode, location_id)) == FRESH for sku_id in sku_ids)
