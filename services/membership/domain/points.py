"""Points rules: earning, redemption at checkout, first-in-first-out expiry and claw-back. Pure.

The ledger is append-only and the balance is always its sum. Credits that expire are "lots" (earned points,
opening balances, adjustments up); every other entry (holds, releases, claw-backs, expiries) consumes or
restores points, and consumption is charged to the oldest lots first.

Only a claw-back may take the balance below zero: the negative balance is a debt that every later credit
(earnings, a released hold) pays off first, and nothing can be spent while it lasts.
"""
from __future__ import annotations

from dataclasses import dataclass

from services.membership.domain.errors import CONFLICT, INVALID, MembershipError

DAY_MS = 86_400_000

# Ledger entry kinds
OPENING = "opening"          # balance carried over from a previous system (a lot)
EARN = "earn"                # earned on a completed order (a lot)
ADJUST = "adjust"            # manual correction by HQ (a lot when positive)
HOLD = "hold"                # reserved for an order at checkout (negative)
RELEASE = "release"          # hold given back on cancellation (positive)
REFUND = "refund"            # points spent on an order given back on its refund (positive)
CLAWBACK = "clawback"        # earned points taken back on a refund (negative; may leave a debt)
EXPIRE = "expire"            # expired, first in first out (negative)
LOT_KINDS = (OPENING, EARN, ADJUST)


@dataclass(frozen=True)
class PointsPolicy:
    earn_per_yuan: int = 1
    redeem_points_per_yuan: int = 100
    max_redeem_share_pct: int = 50
    validity_days: int = 365


def earned_points(paid_fen: int, multiplier: float, policy: PointsPolicy) -> int:
    """Points for an amount paid: whole yuan times the rate times the tier multiplier, rounded down."""
    if paid_fen <= 0:
        return 0
    return int((paid_fen // 100) * policy.earn_per_yuan * multiplier)


def lot_expiry_ms(earned_at_ms: int, policy: PointsPolicy) -> int:
    return earned_at_ms + policy.validity_days * DAY_MS


def redemption(requested: int, payable_fen: int, policy: PointsPolicy) -> tuple[int, int]:
    """(points_used, discount_fen) for `requested` points on an order whose payable amount is `payable_fen`.

    The discount is capped at max_redeem_share_pct of the payable amount; only whole fen are redeemed, so
    points_used may be lower than requested (never higher).
    """
    if requested < 0:
        raise MembershipError("invalid-points", "points to redeem cannot be negative", kind=INVALID)
    if requested == 0 or payable_fen <= 0:
        return 0, 0
    cap_fen = payable_fen * policy.max_redeem_share_pct // 100
    discount = min(requested * 100 // policy.redeem_points_per_yuan, cap_fen)
    points_used = -(-discount * policy.redeem_points_per_yuan // 100)  # ceil: never give fen for free
    if points_used > requested:  # rounding cannot ask for more than requested
        discount -= 1
        points_used = -(-discount * policy.redeem_points_per_yuan // 100)
    return points_used, discount


def ensure_covered(balance: int, points: int) -> None:
    if points > balance:
        raise MembershipError("insufficient-points", f"balance {balance} does not cover {points} points",
                              balance=balance, kind=CONFLICT)


def expiring_now(entries: list[dict], now_ms: int) -> int:
    """Points to expire at `now_ms` under first-in-first-out consumption of lots.

    `entries` are ledger entries (`kind`, `amount`, `expires_at_ms` for lots, `at_ms`). Consumption is
    everything that is not a lot; it eats the oldest lots first, so only what is left of an expired lot
    expires. Previous expiry entries count as consumption, which makes the rule idempotent.
    """
    lots = sorted((e for e in entries if is_lot(e)), key=lambda e: (e["expires_at_ms"], e.get("at_ms", 0)))
    consumed = -sum(e["amount"] for e in entries if not is_lot(e))
    balance = sum(e["amount"] for e in entries)
    expiring = 0
    for lot in lots:
        take = min(lot["amount"], max(consumed, 0))
        consumed -= take
        remaining = lot["amount"] - take
        if lot["expires_at_ms"] <= now_ms:
            expiring += remaining
    return max(0, min(expiring, balance))


def is_lot(entry: dict) -> bool:
    return entry["kind"] in LOT_KINDS and entry["amount"] > 0 and entry.get("expires_at_ms") is not None


def clawback(earned: int, paid_fen: int, refunded_fen: int, already_clawed: int) -> int:
    """Earned points to take back for a refund, proportional to the refunded share of the paid amount."""
    if earned <= 0 or paid_fen <= 0 or refunded_fen <= 0:
        return 0
    due = earned if refunded_fen >= paid_fen else earned * refunded_fen // paid_fen
    return max(0, min(earned, due) - already_clawed)


@dataclass(frozen=True)
class ClawbackSources:
    """Where the points of one claw-back come from. All of them leave the balance at once (one ledger entry);
    this says what covers them."""
    from_balance: int   # spendable points the member still had
    from_holds: int     # points sitting in unpaid orders' holds: when such a hold lets go, they pay the debt
    debt: int           # spent already (or nowhere): later credits pay it off first

    def describe(self) -> str:
        return f"{self.from_balance} from the balance, {self.from_holds} from held orders, {self.debt} as debt"


def clawback_sources(due: int, balance: int, held: int) -> ClawbackSources:
    """Cover a claw-back of `due` points from the balance first, then from the points held by unpaid orders;
    the rest is a debt. A points balance moved into a hold is still the member's, so it cannot escape a
    claw-back: the hold's release gives it back into the debt, not to the member."""
    if due <= 0:
        return ClawbackSources(0, 0, 0)
    from_balance = min(due, max(balance, 0))
    from_holds = min(due - from_balance, max(held, 0))
    return ClawbackSources(from_balance, from_holds, due - from_balance - from_holds)


def spent_points_to_return(points_used: int, paid_fen: int, refunded_fen: int, already_returned: int) -> int:
    """Redeemed points given back on a refund, proportional to the refunded share."""
    if points_used <= 0 or refunded_fen <= 0:
        return 0
    due = points_used if paid_fen <= 0 or refunded_fen >= paid_fen else points_used * refunded_fen // paid_fen
    return max(0, min(points_used, due) - already_returned)
