"""What every order flow shares: the unit of work around one order (`mutate`), the events a change
produces, who is acting, and how another service's refusal is passed on to our caller."""
from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from libs.clients import UpstreamError
from libs.http import kind_of_status
from libs.mongo import ConcurrencyConflict, Mongo
from libs.outbox import Outbox
from libs.principal import Principal
from libs.refusal import FORBIDDEN, NOT_FOUND, UNAVAILABLE, Refusal
from services.orders import events as ev
from services.orders import metrics
from services.orders.domain import order as domain
from services.orders.domain.access import can_see
from services.orders.domain.lifecycle import PENDING, OrderError
from services.orders.payments.port import PaymentProvider
from services.orders.repository import OrderRepository
from services.orders.settings import OrdersSettings
from services.orders.upstream import Upstreams

if TYPE_CHECKING:
    from services.orders.usecases.followups import FollowUps

# The fields of a problem body that are its frame, not its extensions (and names Refusal takes itself).
_FRAME = frozenset({"type", "title", "status", "detail", "instance", "code", "kind", "retry_after_s"})


def actor_of(principal: Principal) -> str:
    if "service" in principal.roles:
        return f"service:{principal.subject}"
    if principal.member_id:
        return f"member:{principal.member_id}"
    if principal.staff_id:
        return f"staff:{principal.staff_id}"
    return f"user:{principal.subject}"


def order_not_found() -> OrderError:
    return OrderError("not-found", "order not found", kind=NOT_FOUND)


def passed_on(exc: UpstreamError) -> Refusal:
    """Another service's refusal told to our caller in its own words (sold-out, coupon-unavailable, ...).

    Its client-facing kinds (not found, conflict, invalid) pass as they are; anything else means the
    sibling could not serve us, which is not the caller's fault."""
    extensions = {k: v for k, v in exc.body.items() if k not in _FRAME}
    kind = kind_of_status(exc.status) if exc.status in (404, 409, 422) else UNAVAILABLE
    return Refusal(exc.problem_type or "upstream-error", str(exc.body.get("detail") or exc), kind=kind, **extensions)


Change = Callable[[dict], object]


class OrderFlow:
    """Base of the order use cases: settings, Mongo, the outbox, the repository, the adapters."""

    def __init__(self, settings: OrdersSettings, mongo: Mongo, outbox: Outbox, upstreams: Upstreams,
                 payments: PaymentProvider, followups: FollowUps | None = None) -> None:
        self.settings = settings
        self.mongo = mongo
        self.outbox = outbox
        self.repo = OrderRepository(mongo, outbox)
        self.upstreams = upstreams
        self.payments = payments
        self.followups = followups if followups is not None else self  # FollowUps is its own

    async def mutate(self, order_id: str, change: Change, *,
                     session_hook: Callable[[object, dict], Awaitable[None]] | None = None,
                     extra_events: Callable[[dict, object], list] | None = None):
        """Load, change (pure domain), save and record the resulting events in one unit of work.

        `change(order)` returns a `domain.Change` (or anything; other results record no events). Returns
        (order, result). A domain refusal escapes as it is; nothing is written then. `session_hook(session,
        order)` runs last inside the unit (it stores the answer under the request's Idempotency-Key).
        """
        async def unit(session):
            order = await self.repo.get(order_id, session)
            if order is None:
                raise order_not_found()
            result = change(order)
            events = self.events_for(order, result.events) if isinstance(result, domain.Change) else []
            events += extra_events(order, result) if extra_events is not None else []
            self.repo.embed(order, events)  # the order's events travel in the order (one outbox, in order)
            order = await self.repo.save(order, session)
            if session_hook is not None:
                await session_hook(session, order)
            self.mongo.after_commit(lambda: self._committed(order, result))
            return order, result

        return await self.mongo.transaction(unit)

    async def mutate_alone(self, order_id: str, change: Change, *, attempts: int = 10, loaded: dict | None = None):
        """`mutate` as ONE atomic single-document write, without a multi-document transaction: load, change
        (pure domain), write guarded by the version with the events inside the order (the outbox in the
        aggregate). For the hot path (checkout, payment claim and confirmation), where every transaction
        costs throughput. A lost race with another writer loads again and decides again. Called inside a
        unit of work, it is part of that unit (as `mutate`). `loaded`: the order as the caller just read or
        wrote it, tried first (saves a read; a stale copy only costs the retry)."""
        if self.mongo.current_session() is not None:
            return await self.mutate(order_id, change)
        for _ in range(attempts):
            order, loaded = (copy.deepcopy(loaded), None) if loaded is not None else \
                (await self.repo.get_committed(order_id), None)  # a retry always reads afresh
            if order is None:
                raise order_not_found()
            fields_before = set(order)
            result = change(order)
            events = self.events_for(order, result.events) if isinstance(result, domain.Change) else []
            try:
                order = await self.repo.save_alone(order, fields_before, events)
            except ConcurrencyConflict:
                continue
            self._committed(order, result)
            return order, result
        raise ConcurrencyConflict(f"orders {order_id} kept changing")

    def _committed(self, order: dict, result: object) -> None:
        if isinstance(result, domain.Change):
            for status in result.events:
                metrics.TRANSITIONS.labels(order["fulfilment"]["type"], status).inc()
        if order.get("pending_actions"):
            self.followups.run_actions_soon(order["_id"])

    def events_for(self, order: dict, names: list[str]) -> list:
        fields = ev.order_fields(order)
        out = []
        for name in names:
            if name in ev.SIMPLE_EVENTS:
                out.append(ev.SIMPLE_EVENTS[name](**fields))
            elif name == "placed":
                out.append(ev.OrderPlaced(**fields, expires_at=order["expires_at"]))
            elif name == "shipped":
                out.append(ev.OrderShipped(**fields, carrier=order["shipment"]["carrier"],
                                           tracking_number=order["shipment"]["tracking_number"]))
            elif name == "cancelled":
                refund = sum(r["amount"] for r in order.get("refunds", []) if r["reason"] == "cancel")
                out.append(ev.OrderCancelled(**fields, reason=order["cancellation"]["reason"], refund_amount=refund))
            elif name == "rejected":  # nothing was sold: who, where and why, no lines
                out.append(ev.OrderRejected(order_id=order["_id"], member_id=order.get("member_id"),
                                            channel=order["channel"], fulfilment=order["fulfilment"],
                                            reason=order.get("rejection") or "rejected"))
            elif name in ("ready_for_pickup", "return_received"):
                pass  # recorded by the caller, which alone knows the plain code / the return record
            else:
                raise ValueError(f"no event for {name}")
        return out

    @staticmethod
    def guard(principal: Principal, order: dict, allowed: Callable[[Principal, dict], bool]) -> None:
        """Someone who cannot see the order is told it does not exist; one who sees it but may not act, no."""
        if not can_see(principal, order) or order["status"] == PENDING:
            raise order_not_found()
        if not allowed(principal, order):
            raise OrderError("forbidden", "you may not do this to this order", kind=FORBIDDEN)
