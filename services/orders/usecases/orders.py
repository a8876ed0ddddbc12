"""Reading orders: one order as its caller may see it, and the lists members and stores page through."""
from __future__ import annotations

from aiohttp import web

from libs.pagination import decode_cursor, page_of
from libs.principal import Principal
from libs.refusal import FORBIDDEN, INVALID
from services.orders.domain.access import can_see
from services.orders.domain.lifecycle import PENDING, OrderError
from services.orders.usecases.base import OrderFlow, order_not_found
from services.orders.views import public_order

CURSOR_SCOPE = "orders.orders"
STORE_TODO = ["confirmed", "allocated", "ready_for_pickup"]


class Orders(OrderFlow):
    async def get_visible(self, principal: Principal, order_id: str) -> dict:
        order = await self.repo.get_committed(order_id)
        if order is None or not can_see(principal, order):
            raise order_not_found()
        if order["status"] == PENDING and not principal.is_admin:
            raise order_not_found()  # a checkout still in progress is not an order yet
        return order

    async def page(self, principal: Principal, store_id: str | None, status: str | None, todo: bool,
                   cursor: str | None, limit: int) -> dict:
        """Newest first: a member's own orders, a store's (its staff), or all (HQ)."""
        query: dict = {}
        if store_id:
            if not principal.can_see_store(store_id):
                raise OrderError("forbidden", "you can only list the orders of your own stores", kind=FORBIDDEN)
            query["store_ids"] = store_id
        elif principal.member_id:
            query["member_id"] = principal.member_id
        elif not principal.is_admin:
            raise OrderError("store-required", "staff list orders of one store: pass store_id", kind=INVALID)
        if todo:
            query["status"] = {"$in": STORE_TODO}
        elif status:
            query["status"] = status
        else:
            query["status"] = {"$nin": [PENDING, "rejected"]}
        docs = await self.repo.newest_first(query, decode_cursor(cursor, CURSOR_SCOPE), limit + 1)
        return page_of(docs, limit, scope=CURSOR_SCOPE, view=public_order)

    async def status_of(self, order_id: str) -> str | None:
        order = await self.repo.get_committed(order_id)
        return order["status"] if order else None


ORDERS = web.AppKey("orders.orders", Orders)
