"""What stock publishes on the real broker, through its outbox: one event per state change, with the data
consumers need (allocations carry ownership and franchisee for settlement)."""
import uuid

from tests.support import eventually
from services.stock.events import ReservationRejected, StockCommitted, StockReleased, StockReserved

SKU = "sku_event_tee"


async def test_reserve_commit_release_and_rejection_are_published_once_each(stock_api, event_tap):
    await event_tap.start("stock.#")
    loc = (await stock_api.location(id=f"loc_ev_{uuid.uuid4().hex[:6]}", name="franchise", lat=31.2, lng=121.4,
                                    ownership="franchise", franchisee_id="frn_dongfang"))["id"]
    await stock_api.stock_up(loc, SKU, 3)
    kept, dropped, refused = (f"ord_{uuid.uuid4().hex[:8]}" for _ in range(3))
    for order in (kept, dropped):
        assert (await stock_api.reserve({"order_id": order, "mode": "pickup", "location_id": loc,
                                         "lines": [{"sku_id": SKU, "qty": 1}]}))[0] == 201
    await stock_api.reserve({"order_id": kept, "mode": "pickup", "location_id": loc,
                             "lines": [{"sku_id": SKU, "qty": 1}]})  # a replay publishes nothing new
    await stock_api.call("POST", f"/stock/internal/reservations/{kept}/commit", stock_api.service)
    await stock_api.call("POST", f"/stock/internal/reservations/{kept}/commit", stock_api.service)
    await stock_api.call("POST", f"/stock/internal/reservations/{dropped}/release", stock_api.service,
                         json={"reason": "payment_failed"})
    status, _ = await stock_api.reserve({"order_id": refused, "mode": "pickup", "location_id": loc,
                                         "lines": [{"sku_id": SKU, "qty": 5}]})
    assert status == 409

    await eventually(lambda: event_tap.of("stock.reservation_rejected", order_id=refused))
    await eventually(lambda: len(event_tap.of("stock.reserved")) == 2 and event_tap.of("stock.committed")
                     and event_tap.of("stock.released"))
    reserved = event_tap.of("stock.reserved", order_id=kept)
    assert len(reserved) == 1 and len(event_tap.of("stock.committed")) == 1
    data = StockReserved.model_validate(reserved[0]["data"])
    assert data.allocations[0].ownership == "franchise" and data.allocations[0].franchisee_id == "frn_dongfang"
    assert StockCommitted.model_validate(event_tap.of("stock.committed")[0]["data"]).order_id == kept
    assert StockReleased.model_validate(event_tap.of("stock.released")[0]["data"]).reason == "payment_failed"
    rejected = ReservationRejected.model_validate(event_tap.of("stock.reservation_rejected")[0]["data"])
    assert rejected.reason == "sold-out" and rejected.lines[0].qty == 5
    envelope = reserved[0]
    assert envelope["source"] == "stock" and envelope["subject"] == kept and envelope["correlation_id"]
