"""Getting the goods to the buyer: ready for pickup (a code the buyer shows), handover with that code (a
wrong code counts; too many lock the order until a manager resets it), shipping, completion, and cancelling
before any of that."""
from __future__ import annotations

from datetime import datetime, timedelta

from aiohttp import web

from libs.clock import utcnow
from libs.ids import new_id
from libs.principal import Principal
from libs.refusal import INVALID, LOCKED, Refusal
from services.orders import events as ev
from services.orders import metrics
from services.orders.domain import order as domain
from services.orders.domain import pickup
from services.orders.domain.access import is_owner, works_at_order_store
from services.orders.domain.lifecycle import OrderError, note_event
from services.orders.usecases.base import OrderFlow, actor_of, order_not_found


def owner_or_store(principal: Principal, order: dict) -> bool:
    return is_owner(principal, order) or works_at_order_store(principal, order)


def store_manager(principal: Principal, order: dict) -> bool:
    return principal.is_admin or (principal.has("store_manager") and works_at_order_store(principal, order))


class Fulfilment(OrderFlow):
    async def cancel(self, principal: Principal, order_id: str, reason: str) -> dict:
        def change(order):
            self.guard(principal, order, owner_or_store)
            # A cancel wins over a charge in flight: money that arrives for a cancelled order is refunded.
            return domain.cancel(order, actor_of(principal), reason, new_id("rfn"), utcnow())

        order, _ = await self.mutate(order_id, change)
        metrics.ORDERS_CANCELLED.labels(order["fulfilment"]["type"], "customer" if principal.member_id else "staff").inc()
        return order

    async def ready_for_pickup(self, principal: Principal, order_id: str) -> tuple[dict, str]:
        """The goods wait at the store; the buyer is sent a fresh code (the order keeps only its hash)."""
        code = pickup.new_code()

        def change(order):
            self.guard(principal, order, works_at_order_store)
            result = domain.ready_for_pickup(order, actor_of(principal), utcnow(),
                                             timedelta(seconds=self.settings.uncollected_after_s))
            pickup.issue(order, self.settings.pickup_code_secret, code)
            return result

        order, _ = await self.mutate(order_id, change, extra_events=lambda o, r: [
            ev.OrderReadyForPickup(**ev.order_fields(o), collect_by=o["collect_by"])])
        return order, code

    async def reset_pickup_code(self, principal: Principal, order_id: str) -> tuple[dict, str]:
        code = pickup.new_code()

        def change(order):
            self.guard(principal, order, store_manager)
            pickup.reset(order, self.settings.pickup_code_secret, code, actor_of(principal), utcnow())

        order, _ = await self.mutate(order_id, change, extra_events=lambda o, r: [
            ev.PickupCodeReissued(**ev.order_fields(o))])
        metrics.PICKUP_VERIFICATIONS.labels("reset").inc()
        return order, code

    async def code_to_send(self, order_id: str) -> dict:
        """The current pickup code, for notifications to put in the member's message (never on the bus)."""
        order = await self.repo.get_committed(order_id)
        if order is None:
            raise order_not_found()
        return {"order_id": order_id, "pickup_code": pickup.code_to_send(order, self.settings.pickup_code_secret)}

    async def pickup(self, principal: Principal, order_id: str, code: str) -> dict:
        """Handover. A wrong code is written down (that is the point of counting) before it is refused."""
        def change(order):
            self.guard(principal, order, works_at_order_store)
            outcome = pickup.verify(order, code, self.settings.pickup_code_secret, self.settings.pickup_max_attempts)
            if outcome == pickup.PickupOutcome.ACCEPTED:
                return domain.picked_up(order, actor_of(principal), utcnow())
            note_event(order, "pickup_code_refused", actor_of(principal), utcnow(),
                       note=f"attempt {order['pickup']['failed_attempts']}")
            return outcome

        try:
            order, result = await self.mutate(order_id, change)
        except Refusal as refusal:
            if refusal.code == "pickup-locked":
                metrics.PICKUP_VERIFICATIONS.labels("locked").inc()
            raise
        if isinstance(result, domain.Change):
            metrics.PICKUP_VERIFICATIONS.labels("accepted").inc()
            _observe_wait(order)
            return order
        metrics.PICKUP_VERIFICATIONS.labels(result).inc()
        left = max(self.settings.pickup_max_attempts - order["pickup"]["failed_attempts"], 0)
        if result == pickup.PickupOutcome.LOCKED_NOW:
            raise OrderError("pickup-locked", "wrong pickup code; too many attempts, the order is locked for "
                                              "handover until a store manager resets the code",
                             kind=LOCKED, attempts_left=0)
        raise OrderError("wrong-pickup-code", f"wrong pickup code; {left} attempts left", kind=INVALID,
                         attempts_left=left)

    async def ship(self, principal: Principal, order_id: str, carrier: str, tracking_number: str) -> dict:
        def change(order):
            self.guard(principal, order, works_at_order_store)
            return domain.ship(order, carrier, tracking_number, actor_of(principal), utcnow())
        return (await self.mutate(order_id, change))[0]

    async def complete(self, principal: Principal, order_id: str) -> dict:
        def change(order):
            self.guard(principal, order, owner_or_store)
            return domain.complete(order, actor_of(principal), utcnow())
        return (await self.mutate(order_id, change))[0]


def _observe_wait(order: dict) -> None:
    ready_at = [t["at"] for t in order["timeline"] if t["status"] == "ready_for_pickup"]
    if ready_at:
        waited = utcnow() - datetime.fromisoformat(ready_at[-1].replace("Z", "+00:00"))
        metrics.PICKUP_WAIT.observe(max(waited.total_seconds(), 0.0))


FULFILMENT = web.AppKey("orders.fulfilment", Fulfilment)
