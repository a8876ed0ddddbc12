"""Returns: asked for online by the owner or opened at any store's counter with the customer's proof,
received at a store (stock goes back there, the refund follows)."""
from __future__ import annotations

import secrets

from aiohttp import web

from libs.clock import utcnow
from libs.ids import new_id
from libs.principal import Principal
from libs.refusal import FORBIDDEN
from services.orders import events as ev
from services.orders import metrics
from services.orders.domain import order as domain
from services.orders.domain import returns as counter
from services.orders.domain.access import can_see, is_owner, is_staff
from services.orders.domain.lifecycle import PENDING, OrderError
from services.orders.usecases.base import OrderFlow, actor_of, order_not_found
from services.orders.views import counter_order, public_order

# Refusals at the counter worth watching: wrong proofs are someone guessing, manager-required a clerk trying.
COUNTED = frozenset({"return-proof-required", "wrong-return-proof", "manager-required"})


class Returns(OrderFlow):
    def view_for(self, principal: Principal, order: dict) -> dict:
        """The whole order for who may read it; for a counter that may not, only what the return needs."""
        return public_order(order) if can_see(principal, order) else counter_order(order)

    async def issue_code(self, principal: Principal, order_id: str) -> dict:
        """The member's app asks for a return code to show at a counter: short-lived, bound to the order."""
        code = "".join(secrets.choice(counter.RETURN_CODE_ALPHABET) for _ in range(counter.RETURN_CODE_LENGTH))
        answer: dict = {}

        def change(order):
            if not is_owner(principal, order) or order["status"] == PENDING:
                raise order_not_found()
            answer.update(counter.issue_return_code(order, code, actor_of(principal), utcnow(),
                                                    self.settings.return_code_ttl_s))

        await self.mutate(order_id, change)
        metrics.RETURNS.labels("code_issued").inc()
        return answer

    async def request(self, principal: Principal, order_id: str, lines: list[dict], reason: str,
                      location_id: str | None, proof: dict | None = None) -> tuple[int, dict]:
        """A return request: 201 with the return record and the order (as the caller may see it)."""
        return_id = new_id("ret")

        def change(order):
            if order["status"] == PENDING:
                raise order_not_found()
            if is_owner(principal, order) or principal.is_admin:
                record = domain.request_return(order, return_id, lines, reason, actor_of(principal), utcnow())
                if location_id:
                    record["location_id"] = location_id
                return record
            # A counter: staff of the store the goods come back to, with the customer's proof.
            if not (is_staff(principal) and location_id in principal.store_ids):
                if can_see(principal, order):
                    raise OrderError("forbidden", "a return at the counter names your store (location_id)",
                                     kind=FORBIDDEN)
                raise order_not_found()
            proof_kind = counter.check_proof(order, proof, utcnow())
            record = domain.request_return(order, return_id, lines, reason, actor_of(principal), utcnow())
            counter.authorise_counter(principal, order, location_id, record["refund_amount"],
                                      self.settings.return_manager_above_fen)
            record.update({"location_id": location_id, "opened_at": location_id, "proof": proof_kind})
            return record

        order, _ = await self._counted(self.mutate(order_id, change, extra_events=lambda o, r: [
            ev.ReturnRequested(**ev.order_fields(o), return_id=r["id"], return_lines=r["lines"], reason=r["reason"],
                               refund_amount=r["refund_amount"])]))
        metrics.RETURNS.labels("requested").inc()
        record = next(r for r in order["returns"] if r["id"] == return_id)
        return 201, {"return": record, "order": self.view_for(principal, order)}

    async def receive(self, principal: Principal, order_id: str, return_id: str, location_id: str,
                      proof: dict | None = None) -> dict:
        if not (principal.is_admin or (is_staff(principal) and location_id in principal.store_ids)):
            raise OrderError("forbidden", "returns are received by staff of the receiving store", kind=FORBIDDEN)

        def change(order):
            if order["status"] == PENDING:
                raise order_not_found()
            if not principal.is_admin:
                record = next((r for r in order.get("returns", []) if r["id"] == return_id), None)
                # Opened at this very counter with the customer's proof: no second proof for the same visit.
                if not (record and record.get("proof") and record.get("opened_at") == location_id):
                    counter.check_proof(order, proof, utcnow())
                if record is not None:
                    counter.authorise_counter(principal, order, location_id, record["refund_amount"],
                                              self.settings.return_manager_above_fen)
            _, result = domain.receive_return(order, return_id, location_id, new_id("rfn"), actor_of(principal),
                                              utcnow())
            return result

        def received_event(order, result):
            record = next(r for r in order["returns"] if r["id"] == return_id)
            return [ev.ReturnReceived(**ev.order_fields(order), return_id=return_id, return_lines=record["lines"],
                                      location_id=location_id, refund_amount=record["refund_amount"])]

        order, _ = await self._counted(self.mutate(order_id, change, extra_events=received_event))
        metrics.RETURNS.labels("received").inc()
        return self.view_for(principal, order)

    @staticmethod
    async def _counted(unit):
        try:
            return await unit
        except OrderError as refusal:
            if refusal.code in COUNTED:
                metrics.RETURN_REFUSALS.labels(refusal.code).inc()
            raise


RETURNS = web.AppKey("orders.returns", Returns)
