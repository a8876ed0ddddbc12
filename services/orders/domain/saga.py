"""The checkout saga and the follow-up actions of each change, as a pure plan.

Forward steps of checkout: reserve stock -> hold coupons/points (only when the order uses them) ->
await payment -> confirmed. A failure compensates the steps already done, newest first.

After a state change commits, the side effects on other services are *actions* kept on the order
(`pending_actions`, plain strings) and run by an executor; each one is idempotent at the other service, is
removed from the order only after it succeeded, and is retried by a sweeper until then. So a crash after
a commit never loses a release, a refund or a commit of stock.
"""
from __future__ import annotations

RESERVE_STOCK = "reserve_stock"
HOLD_BENEFITS = "hold_benefits"

STOCK_RELEASE = "stock.release"
STOCK_EXTEND = "stock.extend"
STOCK_COMMIT = "stock.commit"
BENEFITS_COMMIT = "benefits.commit"
BENEFITS_RELEASE = "benefits.release"
PAYMENT_REFUND = "payment.refund"      # payment.refund:<refund_id>
STOCK_RETURN = "stock.return"          # stock.return:<return_id>

COMPENSATION = {RESERVE_STOCK: STOCK_RELEASE, HOLD_BENEFITS: BENEFITS_RELEASE}


def uses_benefits(coupon_codes: list[str], points: int) -> bool:
    return bool(coupon_codes) or points > 0


def checkout_steps(coupon_codes: list[str], points: int) -> list[str]:
    steps = [RESERVE_STOCK]
    if uses_benefits(coupon_codes, points):
        steps.append(HOLD_BENEFITS)
    return steps


def compensations(steps_started: list[str]) -> list[str]:
    """Undo actions for the steps that were started (a started step may have taken effect), newest first."""
    return [COMPENSATION[step] for step in reversed(steps_started) if step in COMPENSATION]


def on_confirmed(order: dict) -> list[str]:
    """Paid: spend the held benefits; in store the goods leave now. Otherwise stock holds the goods longer
    on its own when it hears `orders.order.confirmed` (no call after the payment; STOCK_EXTEND is only
    still run for orders paid before that)."""
    actions = [BENEFITS_COMMIT] if order.get("benefits_held") else []
    if order["fulfilment"]["type"] == "in_store":
        actions.append(STOCK_COMMIT)
    return actions


def on_handover(order: dict) -> list[str]:
    """Shipped or picked up: the goods leave the store."""
    return [STOCK_COMMIT]


def on_cancelled(order: dict, refund_id: str | None) -> list[str]:
    """Cancel before shipment or handover: refund (if paid), give benefits back, release the stock."""
    actions = []
    if refund_id:
        actions.append(f"{PAYMENT_REFUND}:{refund_id}")
    if order.get("benefits_held"):
        actions.append(BENEFITS_RELEASE)
    actions.append(STOCK_RELEASE)
    return actions


def on_return_received(return_id: str, refund_id: str | None) -> list[str]:
    actions = [f"{STOCK_RETURN}:{return_id}"]
    if refund_id:
        actions.append(f"{PAYMENT_REFUND}:{refund_id}")
    return actions


def split_action(action: str) -> tuple[str, str | None]:
    name, _, argument = action.partition(":")
    return name, argument or None
