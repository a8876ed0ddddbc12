"""The order as clients see it: the stored document minus what only orders may know."""
from __future__ import annotations


def public_order(doc: dict) -> dict:
    """The order shape of docs/ARCHITECTURE.md plus details; never the pickup code hash or costs."""
    lines = [{k: line.get(k) for k in ("sku_id", "product_id", "name", "category", "qty", "unit_price", "subtotal",
                                       "discount", "points_discount", "line_total")} for line in doc["lines"]]
    pickup_state = doc.get("pickup")
    return {
        "id": doc["_id"], "status": doc["status"], "channel": doc["channel"], "member_id": doc.get("member_id"),
        "fulfilment": doc["fulfilment"], "allocations": doc.get("allocations") or [], "lines": lines,
        "totals": doc.get("totals"), "coupon_codes": doc.get("coupon_codes", []), "points": doc.get("points", 0),
        "points_requested": doc.get("points_requested", doc.get("points", 0)),
        "attribution": doc.get("attribution") or {}, "payment": doc.get("payment"),
        "payment_attempt": {k: v for k, v in (doc.get("payment_attempt") or {}).items() if k != "id"} or None,
        # the payment deadline only while payment is awaited; a pickup order then says until when to collect
        "expires_at": doc.get("expires_at") if doc["status"] in ("pending", "pending_payment") else None,
        "collect_by": doc.get("collect_by") if doc["status"] == "ready_for_pickup" else None, "created_at": doc.get("created_at"), "updated_at": doc.get("updated_at"),
        "shipment": doc.get("shipment"), "cancellation": doc.get("cancellation"), "rejection": doc.get("rejection"),
        "pickup": ({"failed_attempts": pickup_state.get("failed_attempts", 0), "locked": pickup_state.get("locked", False)}
                   if pickup_state else None),
        "returns": doc.get("returns", []),
        "refunds": [{k: r.get(k) for k in ("id", "amount", "reason", "return_id", "state")} for r in doc.get("refunds", [])],
        "timeline": doc.get("timeline", []),
    }


def counter_order(doc: dict) -> dict:
    """What a store counter taking a return needs of an order it may not read: the lines bought and what was
    already returned; never the member, the payment, the attribution, the benefits or the timeline."""
    return {
        "id": doc["_id"], "status": doc["status"], "fulfilment_type": doc["fulfilment"]["type"],
        "lines": [{k: line.get(k) for k in ("sku_id", "product_id", "name", "category", "qty", "unit_price",
                                            "line_total")} for line in doc["lines"]],
        "returns": [{k: r.get(k) for k in ("id", "status", "lines", "refund_amount", "location_id")}
                    for r in doc.get("returns", [])],
        "refunds": [{k: r.get(k) for k in ("id", "amount", "reason", "return_id", "state")}
                    for r in doc.get("refunds", []) if r.get("return_id")],
    }
