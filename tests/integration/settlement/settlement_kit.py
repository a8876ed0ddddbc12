"""Order event data as libs/README.md "Events" describes them (the orders service publishes these)."""
from __future__ import annotations

from libs.ids import new_id


def new_order_id() -> str:
    return new_id("ord")


def order_data(order_id: str, *, channel: str, fulfilment: dict, lines: list[dict], staff_id: str | None,
               store_id: str | None = None, provider: str = "wechat", fee: int | None = None,
               payment_id: str | None = None, points_discount: int = 0, order_discount: int = 0) -> dict:
    """Lines: dicts with sku_id, qty, unit_price, cost_price and optional discount (all fen)."""
    full_lines = []
    for line in lines:
        gross = line["qty"] * line["unit_price"]
        discount = line.get("discount", 0)
        full_lines.append({"sku_id": line["sku_id"], "product_id": line.get("product_id", "prd_x"),
                           "category": line.get("category", "tees"), "qty": line["qty"],
                           "unit_price": line["unit_price"], "cost_price": line["cost_price"],
                           "line_total": gross - discount, "discount": discount})
    subtotal = sum(line["qty"] * line["unit_price"] for line in full_lines)
    discount = sum(line["discount"] for line in full_lines) + order_discount
    total = subtotal - discount - points_discount
    payment = {"provider": provider, "payment_id": payment_id or f"pay_{order_id}", "amount": total}
    if fee is not None:
        payment["fee"] = fee
    return {"order_id": order_id, "member_id": "mbr_demo_lin", "channel": channel, "fulfilment": fulfilment,
            "lines": full_lines, "totals": {"subtotal": subtotal, "discount": discount,
                                            "points_discount": points_discount, "total": total},
            "attribution": {"store_id": store_id, "staff_id": staff_id, "campaign_id": None},
            "payment": payment}
