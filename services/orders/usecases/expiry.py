"""Orders that ran out of time: unpaid past the payment window, not collected, shipped long ago (auto
complete), checkouts interrupted by a crash (compensated), reservations stock let expire; and the retry of
follow-up actions that failed. The sweeper job and the stock consumer call this."""
from __future__ import annotations

from aiohttp import web

from libs.clock import to_ms, utcnow
from libs.idempotency import owner_is_dead
from libs.ids import new_id
from libs.logging import get_logger
from libs.refusal import Refusal
from services.orders import metrics
from services.orders.domain import order as domain
from services.orders.domain.lifecycle import PENDING, PENDING_PAYMENT, READY_FOR_PICKUP, SHIPPED
from services.orders.usecases.base import OrderFlow

log = get_logger("orders")


class Expiry(OrderFlow):
    def __init__(self, *adapters, payments_flow=None) -> None:
        super().__init__(*adapters)
        self.payments_flow = payments_flow  # Payments: asked about unanswered charges before cancelling

    async def sweep(self) -> dict[str, int]:
        """One pass of every periodic duty; returns what it did (for logs and tests)."""
        now_ms = to_ms(utcnow())
        done = {"expired": 0, "uncollected": 0, "auto_completed": 0, "stuck_rejected": 0, "actions_retried": 0}
        for order_id in await self.repo.find_ids({"status": PENDING_PAYMENT, "expires_at_ms": {"$lt": now_ms}}):
            if await self._charge_went_through(order_id):
                done["paid_after_lost_answer"] = done.get("paid_after_lost_answer", 0) + 1
                continue
            if await self._system_cancel(order_id, "payment window expired", "expired",
                                         skip_charging_ms=self.settings.payment_attempt_timeout_s * 1000):
                done["expired"] += 1
        uncollected_ms = now_ms - self.settings.uncollected_after_s * 1000
        for order_id in await self.repo.find_ids({"status": READY_FOR_PICKUP, "$or": [
                {"collect_by_ms": {"$lt": now_ms}},
                {"collect_by_ms": {"$exists": False}, "status_changed_at_ms": {"$lt": uncollected_ms}}]}):
            if await self._system_cancel(order_id, "not collected in time", "uncollected"):
                done["uncollected"] += 1
        complete_ms = now_ms - self.settings.auto_complete_after_s * 1000
        for order_id in await self.repo.find_ids({"status": SHIPPED, "status_changed_at_ms": {"$lt": complete_ms}}):
            if await self._try(order_id, lambda o: domain.complete(o, "system:auto-complete", utcnow())):
                done["auto_completed"] += 1
        stuck_ms = now_ms - self.settings.stuck_checkout_after_s * 1000
        for order_id in await self.repo.find_ids({"status": PENDING, "created_at_ms": {"$lt": stuck_ms}}):
            # Only when the process that ran this checkout is known dead (a slow live one finishes its
            # own saga): undo every planned step.
            if not await self._checkout_owner_dead(order_id, now_ms):
                continue
            if await self._try(order_id, lambda o: domain.reject(o, "checkout interrupted", utcnow())):
                done["stuck_rejected"] += 1
        waiting = await self.repo.find_ids({"has_pending_actions": True})
        metrics.ORDERS_WITH_PENDING_ACTIONS.set(len(waiting))
        for order_id in waiting:
            await self.followups.run_actions(order_id)
            done["actions_retried"] += 1
        return done

    async def _checkout_owner_dead(self, order_id: str, now_ms: int) -> bool:
        order = await self.repo.get_committed(order_id)
        if order is None:
            return False
        if not order.get("checkout_owner"):
            return True  # recorded before checkouts named their process: its age alone decides
        return await owner_is_dead(self.mongo, {"owner": order.get("checkout_owner"),
                                                "claimed_ms": order.get("created_at_ms")}, now_ms)

    async def _charge_went_through(self, order_id: str) -> bool:
        """An attempt whose answer was lost may have taken the money: never cancel before asking."""
        if self.payments_flow is None:
            return False
        order = await self.repo.get_committed(order_id)
        stale_ms = self.settings.payment_attempt_timeout_s * 1000
        if order is None or domain.payment_in_flight(order, utcnow(), stale_ms):
            return False  # being charged right now: _system_cancel leaves it for the next pass
        return await self.payments_flow.resolve_unanswered(order_id) == "paid"

    async def _try(self, order_id: str, change) -> bool:
        """A change that another actor may have made moot in the meantime (then it is refused: skip it)."""
        try:
            await self.mutate(order_id, change)
        except Refusal:
            return False
        return True

    async def _system_cancel(self, order_id: str, reason: str, cause: str, skip_charging_ms: int = 0) -> bool:
        def change(order):
            if skip_charging_ms and domain.payment_in_flight(order, utcnow(), skip_charging_ms):
                return None  # a payment is being taken right now; look again next pass
            return domain.cancel(order, f"system:{cause}", reason, new_id("rfn"), utcnow())
        try:
            order, result = await self.mutate(order_id, change)
        except Refusal:
            return False
        if result is None:
            return False
        metrics.ORDERS_CANCELLED.labels(order["fulfilment"]["type"], cause).inc()
        return True

    async def reservation_expired(self, order_id: str) -> None:
        """Stock let the order's reservation expire: an unpaid order is cancelled (its benefits released);
        a paid one is left alone and logged (its stock was extended on payment; this is the rare race)."""
        order = await self.repo.get(order_id, self.mongo.current_session())
        if order is None:
            return
        if order["status"] != PENDING_PAYMENT:
            if order.get("payment") and order["status"] not in ("cancelled", "completed"):
                log.warning("orders.paid_order_lost_its_reservation", order_id=order_id, status=order["status"])
                metrics.RESERVATIONS_LOST.inc()
            return
        order, _ = await self.mutate(order_id, lambda o: domain.cancel(
            o, "system:stock-expiry", "the stock reservation expired", new_id("rfn"), utcnow()))
        fulfilment = order["fulfilment"]["type"]
        self.mongo.after_commit(lambda: metrics.ORDERS_CANCELLED.labels(fulfilment, "expired").inc())


EXPIRY = web.AppKey("orders.expiry", Expiry)
