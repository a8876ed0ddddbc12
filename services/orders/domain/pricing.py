"""Order totals in integer fen, with discounts allocated to lines so they add up exactly.

A coupon's discount is split over the lines it applies to, a points discount over every line, each in
proportion to what the lines have left, with the largest-remainder method: every line gets the floor of its
exact share, and the fen left over go one by one to the lines with the largest remainders (earlier line
first on a tie). So line discounts always sum to the order discount, to the fen.
"""
from __future__ import annotations

from libs.refusal import INVALID
from services.orders.domain.lifecycle import OrderError


def allocate(amount: int, weights: list[int]) -> list[int]:
    """Split `amount` fen over `weights` proportionally; the parts sum to `amount` exactly."""
    if amount < 0:
        raise ValueError("amount must be >= 0")
    total = sum(weights)
    if amount == 0 or total == 0:
        if amount and not total:
            raise ValueError("cannot allocate a positive amount over zero weights")
        return [0] * len(weights)
    shares = [amount * w // total for w in weights]
    remainders = [amount * w % total for w in weights]
    left = amount - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-remainders[i], i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def price_lines(requested: list[dict], quotes: dict[str, dict]) -> list[dict]:
    """Lines as charged: the quoted unit price for each requested (sku_id, qty); same SKUs merged."""
    merged: dict[str, int] = {}
    for line in requested:
        merged[line["sku_id"]] = merged.get(line["sku_id"], 0) + int(line["qty"])
    lines = []
    for sku_id, qty in merged.items():
        quote = quotes.get(sku_id)
        if quote is None:
            raise OrderError("sku-not-sellable", f"{sku_id} has no price", kind=INVALID, sku_ids=[sku_id])
        unit_price = int(quote["unit_price"])
        lines.append({"sku_id": sku_id, "product_id": quote.get("product_id"), "name": quote.get("name"),
                      "category": quote.get("category"), "qty": qty, "unit_price": unit_price,
                      "base_price": int(quote.get("base_price", unit_price)),
                      "cost_price": int(quote.get("cost_price", 0) or 0),
                      "subtotal": unit_price * qty})
    return lines


def apply_discounts(lines: list[dict], coupon_discount: int, points_discount: int,
                    coupons: list[dict] | None = None) -> tuple[list[dict], dict]:
    """Lines with their share of each discount and their net total, and the order totals.

    `coupons` ({discount, sku_ids} each, as membership held them) share each coupon's discount over the lines
    it applies to only, in proportion to what those lines have left; without it the coupon discount is an
    order-level amount. Points are always order-level: shared over what every line has left after coupons.
    """
    subtotal = sum(line["subtotal"] for line in lines)
    if coupon_discount < 0 or points_discount < 0:
        raise OrderError("invalid-discount", "discounts cannot be negative", kind=INVALID)
    if coupon_discount + points_discount > subtotal:
        raise OrderError("discount-exceeds-subtotal",
                         f"discounts {coupon_discount + points_discount} exceed the subtotal {subtotal}")
    if coupons is None:
        coupons = [{"discount": coupon_discount, "sku_ids": None}] if coupon_discount else []
    if sum(int(c["discount"]) for c in coupons) != coupon_discount:
        raise OrderError("invalid-discount", "the coupons' discounts do not add up to the coupon discount",
                         kind=INVALID)
    left = [line["subtotal"] for line in lines]
    coupon_parts = [0] * len(lines)
    for coupon in coupons:
        scope = coupon.get("sku_ids")
        weights = [left[i] if scope is None or line["sku_id"] in scope else 0 for i, line in enumerate(lines)]
        if int(coupon["discount"]) > sum(weights):
            raise OrderError("discount-exceeds-subtotal",
                             f"a coupon's discount {coupon['discount']} exceeds what its lines cost ({sum(weights)})")
        for i, part in enumerate(allocate(int(coupon["discount"]), weights)):
            coupon_parts[i] += part
            left[i] -= part
    points_parts = allocate(points_discount, left)
    priced = []
    for line, coupon_part, points_part in zip(lines, coupon_parts, points_parts):
        priced.append({**line, "discount": coupon_part, "points_discount": points_part,
                       "line_total": line["subtotal"] - coupon_part - points_part})
    totals = {"subtotal": subtotal, "discount": coupon_discount, "points_discount": points_discount,
              "total": subtotal - coupon_discount - points_discount}
    return priced, totals


def refund_for(line: dict, already_returned: int, returning: int) -> int:
    """Refund of `returning` more units of a line: cumulative shares, so a full return refunds line_total."""
    qty = line["qty"]
    if returning <= 0 or already_returned + returning > qty:
        raise OrderError("return-exceeds-purchase",
                         f"{line['sku_id']}: {already_returned} of {qty} already returned, cannot return {returning}",
                         kind=INVALID)
    before = line["line_total"] * already_returned // qty
    after = line["line_total"] * (already_returned + returning) // qty
    return after - before


def payment_fee(amount: int, rate_per_10000: int) -> int:
    """Provider fee in fen, rounded half up."""
    return (amount * rate_per_10000 + 5000) // 10000
