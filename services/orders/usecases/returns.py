"""Returns: asked for online by the owner or opened at any store's counter, received at a store (stock
goes back there, the refund follows)."""
from __future__ import annotations

from aiohttp import web

from libs.clock import utcnow
from libs.ids import new_id
from libs.principal import Principal
from libs.refusal import FORBIDDEN
from services.orders import events as ev
from services.orders import metrics
from services.orders.domain import order as domain
from services.orders.domain.access import can_see, is_owner, is_staff
from services.orders.domain.lifecycle import PENDING, OrderError
from services.orders.usecases.base import OrderFlow, actor_of, order_not_found
from services.orders.views import public_order


class Returns(OrderFlow):
    async def request(self, principal: Principal, order_id: str, lines: list[dict], reason: str,
                      location_id: str | None) -> tuple[int, dict]:
        """A return request: 201 with the return record and the order."""
        return_id = new_id("ret")

        def change(order):
            # The owner asks online, or staff of ANY store open it at their counter (return anywhere).
            if not (can_see(principal, order) or (is_staff(principal) and location_id in principal.store_ids)) \
                    or order["status"] == PENDING:
                raise order_not_found()
            if not (is_owner(principal, order) or principal.is_admin or is_staff(principal)):
                raise OrderError("forbidden", "you may not return this order", kind=FORBIDDEN)
            record = domain.request_return(order, return_id, lines, reason, actor_of(principal), utcnow())
            if location_id:
                record["location_id"] = location_id
            return record

        order, _ = await self.mutate(order_id, change, extra_events=lambda o, r: [
            ev.ReturnRequested(**ev.order_fields(o), return_id=r["id"], return_lines=r["lines"], reason=r["reason"],
                               refund_amount=r["refund_amount"])])
        metrics.RETURNS.labels("requested").inc()
        return 201, {"return": next(r for r in order["returns"] if r["id"] == return_id), "order": public_order(order)}

    async def receive(self, principal: Principal, order_id: str, return_id: str, location_id: str) -> dict:
        if not (principal.is_admin or (is_staff(principal) and location_id in principal.store_ids)):
            raise OrderError("forbidden", "returns are received by staff of the receiving store", kind=FORBIDDEN)

        def change(order):
            if order["status"] == PENDING:
                raise order_not_found()
            _, result = domain.receive_return(order, return_id, location_id, new_id("rfn"), actor_of(principal),
                                              utcnow())
            return result

        def received_event(order, result):
            record = next(r for r in order["returns"] if r["id"] == return_id)
            return [ev.ReturnReceived(**ev.order_fields(order), return_id=return_id, return_lines=record["lines"],
                                      location_id=location_id, refund_amount=record["refund_amount"])]

        order, _ = await self.mutate(order_id, change, extra_events=received_event)
        metrics.RETURNS.labels("received").inc()
        return order


RETURNS = web.AppKey("orders.returns", Returns)
