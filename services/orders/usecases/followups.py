"""Follow-up actions: the saga steps that run after an order's change committed (stock commit / release /
extend, benefits commit / release, returns to stock, refunds). Each is recorded on the order in the same
unit of work as the change that needs it and removed once it succeeded, so a crash or a sibling down only
delays it: the sweeper runs what is left."""
from __future__ import annotations

import asyncio

from aiohttp import web

from libs.clock import utcnow
from libs.clients import UpstreamError
from libs.logging import get_logger
from services.orders import events as ev
from services.orders import metrics
from services.orders.domain import order as domain
from services.orders.domain import saga
from services.orders.usecases.base import OrderFlow

log = get_logger("orders")


class FollowUps(OrderFlow):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.followups = self
        self._background: set[asyncio.Task] = set()

    def run_actions_soon(self, order_id: str) -> None:
        task = asyncio.create_task(self.run_actions(order_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def run_actions(self, order_id: str) -> int:
        """Run the order's pending actions; each is removed once it succeeded. Returns how many remain."""
        order = await self.repo.get_committed(order_id)
        if order is None:
            return 0
        remaining = 0
        for action in list(order.get("pending_actions", [])):
            name, argument = saga.split_action(action)
            try:
                outcome = await self._perform(order, name, argument)
            except UpstreamError as exc:
                if not overtaken(name, exc):
                    remaining += 1
                    metrics.SAGA_ACTIONS.labels(name, "failed").inc()
                    log.warning("orders.action_failed", order_id=order_id, action=action, error=str(exc)[:300])
                    continue
                # A release got there first (the order was cancelled while this commit waited): the answer
                # is final, retrying cannot change it. The action is done; a person is told.
                log.error("orders.action_overtaken_by_release", order_id=order_id, action=action,
                          problem=exc.problem_type)
                await self._finish(order_id, action, name, argument, None)
                metrics.SAGA_ACTIONS.labels(name, "overtaken").inc()
                continue
            except Exception as exc:
                remaining += 1
                metrics.SAGA_ACTIONS.labels(name, "failed").inc()
                log.warning("orders.action_failed", order_id=order_id, action=action,
                            error=f"{type(exc).__name__}: {exc}"[:300])
                continue
            await self._finish(order_id, action, name, argument, outcome)
            metrics.SAGA_ACTIONS.labels(name, "done").inc()
        return remaining

    async def _perform(self, order: dict, name: str, argument: str | None):
        order_id = order["_id"]
        if name == saga.STOCK_RELEASE:
            await self.upstreams.reservation_action(order_id, "release")
        elif name == saga.STOCK_EXTEND:
            await self.upstreams.reservation_action(order_id, "extend", {"ttl_s": self.settings.paid_reservation_ttl_s})
        elif name == saga.STOCK_COMMIT:
            await self.upstreams.reservation_action(order_id, "commit")
        elif name == saga.BENEFITS_COMMIT:
            await self.upstreams.hold_action(order_id, "commit")
        elif name == saga.BENEFITS_RELEASE:
            await self.upstreams.hold_action(order_id, "release")
        elif name == saga.STOCK_RETURN:
            record = next(r for r in order["returns"] if r["id"] == argument)
            for line in record["lines"]:
                await self.upstreams.return_to_stock(record["location_id"], line["sku_id"], line["qty"],
                                                     key=f"{argument}:{line['sku_id']}")
        elif name == saga.PAYMENT_REFUND:
            return await self._refund(order, argument)
        else:
            raise ValueError(f"unknown action {name}")
        return None

    async def _refund(self, order: dict, refund_id: str | None) -> str:
        refund = next(r for r in order["refunds"] if r["id"] == refund_id)
        if refund["state"] == "done":
            return refund["provider_refund_id"]
        payment_id = refund.get("payment_id") or order["payment"]["payment_id"]
        if refund["amount"] == 0 or payment_id.startswith("free_"):
            return "none"
        result = await self.payments.refund(payment_id=payment_id, refund_key=refund["id"], amount=refund["amount"])
        return result.refund_id

    async def _finish(self, order_id: str, action: str, name: str, argument: str | None, outcome) -> None:
        """Drop the done action; a refund that went through is recorded and told (once)."""
        async def unit(session):
            order = await self.repo.get(order_id, session)
            if order is None or action not in order.get("pending_actions", []):
                return None
            domain.finish_action(order, action)
            refund = None
            if name == saga.PAYMENT_REFUND:
                refund = next(r for r in order["refunds"] if r["id"] == argument)
                refund = None if refund["state"] == "done" else domain.refund_done(order, argument, outcome, utcnow())
            self.repo.embed(order, _refund_events(order, refund))
            await self.repo.save(order, session)
            return refund

        refund = await self.mongo.transaction(unit)
        if refund is not None:
            metrics.REFUNDED_FEN.labels(refund["reason"]).inc(refund["amount"])


def _refund_events(order: dict, refund: dict | None) -> list:
    if not refund or refund["reason"] == "late_payment":
        # Money that arrived for an order no longer payable never was the order's: nothing for membership
        # or settlement to undo (the payments metric counts it).
        return []
    record = next((r for r in order.get("returns", []) if r["id"] == refund.get("return_id")), None)
    return [ev.OrderRefunded(**ev.order_fields(order), refund_id=refund["id"], refund_amount=refund["amount"],
                             reason=refund["reason"], return_id=refund.get("return_id"),
                             return_lines=record["lines"] if record else [],
                             provider_refund_id=refund["provider_refund_id"])]


FOLLOW_UPS = web.AppKey("orders.follow_ups", FollowUps)


OVERTAKEN = {saga.BENEFITS_COMMIT: {"hold-released"}, saga.STOCK_COMMIT: {"reservation-released"}}


def overtaken(action: str, exc: UpstreamError) -> bool:
    """A commit refused because the thing it commits was released meanwhile: a definite, final answer."""
    return exc.status == 409 and exc.problem_type in OVERTAKEN.get(action, set())
