"""Movements: what staff (and orders, for returns) do to stock at a location, each one line of the ledger."""
from __future__ import annotations

from aiohttp import web

from libs.clock import now_ms
from libs.ids import new_id
from libs.mongo import ConcurrencyConflict
from libs.pagination import bad_cursor, decode_cursor, page_of
from libs.principal import Principal
from libs.refusal import FORBIDDEN, INVALID, NOT_FOUND
from services.stock import metrics
from services.stock.domain import model
from services.stock.domain.model import StockError
from services.stock.events import MovementApprovalRequested, MovementApproved, MovementRejected
from services.stock.usecases.core import (StockCore, approval_view, fingerprint, may_approve_at, may_write_at,
                                          movement_view, transaction_replaying_duplicates)

MOVEMENTS_SCOPE = "stock.movements"
APPROVALS_SCOPE = "stock.approvals"


MOVED, ASKED = "moved", "asked"  # a ledger line was written / the movement waits for a manager
COUNTED_REFUSALS = frozenset({"movement-too-large", "reason-required", "invalid-reason"})


class Movements:
    """The movement ledger: receive, sale, adjust, count, transfers, returns; idempotent by key. A clerk's bulk
    adjustment, count, receipt or return is not written but waits for a manager (`Approvals`)."""

    def __init__(self, core: StockCore) -> None:
        self.core = core
        self.mongo = core.mongo

    async def record(self, movement: dict, principal: Principal) -> tuple[int, dict]:
        """Apply one movement and append it to the ledger (201), or keep it for a manager's approval (202); a
        replayed key answers the first result."""
        location_id = movement.get("location_id")
        if movement["kind"] == "transfer_in":
            transfer = await self.core.transfers.get(movement["transfer_id"])
            location_id = transfer["to_location_id"] if transfer else location_id
        # orders books a return taken back at any store (its scope says so); everyone else writes where they work
        trusted_return = principal.has_scope("stock:returns") and movement["kind"] == "return_to_stock"
        if not trusted_return:
            may_write_at(principal, location_id)
        may_approve = trusted_return or may_approve_at(principal, location_id)
        try:
            model.reason_of(movement["kind"], movement.get("reason"), movement.get("delta"))
            outcome, doc = await transaction_replaying_duplicates(
                self.mongo, lambda s: self._record(movement, principal.subject, may_approve, s))
        except StockError as refusal:
            if refusal.code in COUNTED_REFUSALS:
                metrics.MOVEMENTS_REFUSED.labels(refusal.code).inc()
            raise
        return (201, movement_view(doc)) if outcome == MOVED else (202, approval_view(doc))

    async def page(self, principal: Principal, *, location_id: str | None, sku_id: str | None,
                   cursor: str | None, limit: int) -> dict:
        """The ledger, newest first, of the stores the caller may see."""
        filters = await self.core.readable_filter(principal, location_id)
        if sku_id:
            filters["sku_id"] = sku_id
        before = decode_cursor(cursor, MOVEMENTS_SCOPE)
        if before is not None and not isinstance(before, int):
            raise bad_cursor()
        docs = await self.core.ledger.page(filters, before, limit + 1)
        return page_of(docs, limit, scope=MOVEMENTS_SCOPE, key=lambda d: d["seq"], view=movement_view)

    async def _record(self, movement: dict, actor: str, may_approve: bool, session) -> tuple[str, dict]:
        core = self.core
        wanted = fingerprint(movement)
        existing = await core.ledger.by_key(movement["key"], session)
        if existing is None:
            existing = await core.approvals.by_key(movement["key"], session)
            outcome = ASKED
        else:
            outcome = MOVED
        if existing is not None:
            if existing.get("request_fingerprint") != wanted:
                raise StockError("movement-key-reused", "this movement key was used for a different movement",
                                 kind=INVALID)
            return outcome, existing
        if movement["kind"] == "transfer_in":
            return MOVED, await self._receive_transfer(movement, wanted, actor, session)
        return await self.apply(movement, wanted, actor, session, may_approve=may_approve)

    async def apply(self, movement: dict, wanted: str, actor: str, session, *, may_approve: bool,
                    extra: dict | None = None) -> tuple[str, dict]:
        """Plan the movement on the level as it is now and write it, or (a clerk above the threshold) ask for
        approval instead. Inside the caller's unit of work."""
        core = self.core
        kind = movement["kind"]
        location = await core.locations.get(movement["location_id"], session)
        if location is None:
            raise StockError("unknown-location", f"location {movement['location_id']} does not exist", kind=INVALID)
        if kind == "transfer_out":
            destination = await core.locations.get(movement["to_location_id"], session)
            if destination is None or destination["_id"] == location["_id"]:
                raise StockError("unknown-location", "to_location_id must be another existing location",
                                 kind=INVALID)
        level = await core.levels.ensure(location["_id"], movement["sku_id"], session)
        change = model.plan_movement(kind, qty=movement.get("qty"), delta=movement.get("delta"),
                                     counted=movement.get("counted"), on_hand=level["on_hand"],
                                     reserved=level["reserved"])
        model.check_size(change, core.settings.max_movement_units)
        reason = model.reason_of(kind, movement.get("reason"), movement.get("delta"))
        if model.needs_approval(kind, change, may_approve=may_approve,
                                threshold=core.settings.clerk_approval_threshold):
            return ASKED, await self._ask(movement, wanted, actor, change, reason, session)
        if level["available"] < change.needs_available:
            raise StockError("insufficient-stock",
                             f"only {level['available']} of {movement['sku_id']} are available at {location['_id']} "
                             f"(reserved units cannot leave)")
        if change.on_hand > 0:
            core.stock_given_back(movement["sku_id"])
        if change.on_hand and not await core.levels.change_on_hand(location["_id"], movement["sku_id"],
                                                                   change.on_hand, level["on_hand"], session):
            raise ConcurrencyConflict(f"level {location['_id']}/{movement['sku_id']} changed concurrently")
        transfer_id = await self._send_transfer(movement, session) if kind == "transfer_out" else None
        if change.on_hand:
            await core.note_available(location["_id"], movement["sku_id"], level["available"] + change.on_hand,
                                      falling=change.on_hand < 0, flagged=bool(level.get("sold_out")))
        await core.maybe_low(level, level["available"], level["available"] + change.on_hand, session,
                             on_hand=level["on_hand"] + change.on_hand)
        return MOVED, await core.append_ledger(
            session, key=movement["key"], kind=kind, location_id=location["_id"], sku_id=movement["sku_id"],
            qty=movement.get("qty"), delta=change.on_hand, level_before=level, variance=change.variance,
            reason=reason, transfer_id=transfer_id, actor=actor, reference=movement.get("reference"),
            fingerprint_=wanted, extra={"note": movement.get("note"), **(extra or {})})

    async def _ask(self, movement: dict, wanted: str, actor: str, change: model.LevelChange, reason: str,
                   session) -> dict:
        """The clerk's movement, kept (with its key) until a manager of the store approves or rejects it."""
        core = self.core
        approval = {"_id": new_id("apr"), "key": movement["key"], "status": model.PENDING, "kind": movement["kind"],
                    "location_id": movement["location_id"], "sku_id": movement["sku_id"], "reason": reason,
                    "units": abs(change.on_hand), "movement": movement, "requested_by": actor,
                    "requested_at_ms": now_ms(), "request_fingerprint": wanted}
        await core.approvals.add(approval, session)
        await core.outbox.record(session, MovementApprovalRequested(
            approval_id=approval["_id"], location_id=approval["location_id"], sku_id=approval["sku_id"],
            kind=approval["kind"], reason=reason, units=approval["units"], requested_by=actor),
            subject=approval["_id"])
        self.mongo.after_commit(lambda: metrics.APPROVALS.labels(approval["kind"], "requested").inc())
        return approval

    async def _send_transfer(self, movement: dict, session) -> str:
        """Goods on their way: the transfer to receive later, and the destination's in-transit count."""
        core = self.core
        transfer_id = new_id("trf")
        await core.transfers.add({"_id": transfer_id, "from_location_id": movement["location_id"],
                                  "to_location_id": movement["to_location_id"], "sku_id": movement["sku_id"],
                                  "qty": movement["qty"], "status": "in_transit", "out_key": movement["key"],
                                  "created_at_ms": now_ms()}, session)
        await core.levels.ensure(movement["to_location_id"], movement["sku_id"], session)
        await core.levels.change_in_transit(movement["to_location_id"], movement["sku_id"], movement["qty"], session)
        return transfer_id

    async def _receive_transfer(self, movement: dict, wanted: str, actor: str, session) -> dict:
        core = self.core
        transfer = await core.transfers.get(movement["transfer_id"], session)
        if transfer is None:
            raise StockError("unknown-transfer", f"transfer {movement['transfer_id']} does not exist", kind=INVALID)
        if movement.get("location_id") not in (None, transfer["to_location_id"]):
            raise StockError("wrong-location", "a transfer is received at its destination", kind=INVALID)
        if transfer["status"] != "in_transit":
            raise StockError("transfer-received", "this transfer was already received")
        to, sku, qty = transfer["to_location_id"], transfer["sku_id"], transfer["qty"]
        level = await core.levels.ensure(to, sku, session)
        core.stock_given_back(sku)
        if not await core.levels.change_on_hand(to, sku, qty, level["on_hand"], session):
            raise ConcurrencyConflict(f"level {to}/{sku} changed concurrently")
        await core.levels.change_in_transit(to, sku, -qty, session)
        await core.note_available(to, sku, level["available"] + qty, falling=False, flagged=bool(level.get("sold_out")))
        transfer["status"] = "received"
        transfer["in_key"] = movement["key"]
        await core.transfers.save(transfer, session)
        return await core.append_ledger(session, key=movement["key"], kind="transfer_in", location_id=to, sku_id=sku,
                                        qty=qty, delta=qty, level_before=level, transfer_id=transfer["_id"],
                                        actor=actor, reference=movement.get("reference"), fingerprint_=wanted,
                                        reason=model.reason_of("transfer_in", movement.get("reason")),
                                        extra={"note": movement.get("note")})


class Approvals:
    """A manager of the store (or HQ) approves or rejects a clerk's pending movement, one unit of work each."""

    def __init__(self, core: StockCore, movements: Movements) -> None:
        self.core, self.movements = core, movements
        self.mongo = core.mongo

    async def decide(self, principal: Principal, approval_id: str, decision: str, note: str | None) -> dict:
        """Approved: the movement is planned on the level as it is now and written to the ledger (a count
        lands on the counted figure); rejected: nothing changes. Either way the decision is recorded."""
        core = self.core

        async def unit(session):
            approval = await core.approvals.get(approval_id, session)
            if approval is None or not principal.can_see_store(approval["location_id"]):
                raise StockError("not-found", "approval not found", kind=NOT_FOUND)
            if not may_approve_at(principal, approval["location_id"]):
                raise StockError("manager-required", "a manager of the store approves or rejects this movement",
                                 kind=FORBIDDEN)
            model.decide_approval(approval, decision, principal.subject)
            approval.update({"decided_by": principal.subject, "decided_at_ms": now_ms(), "decision_note": note})
            if decision == model.APPROVED:
                _, entry = await self.movements.apply(
                    approval["movement"], approval["request_fingerprint"], approval["requested_by"], session,
                    may_approve=True, extra={"approval_id": approval["_id"], "approved_by": principal.subject})
                approval["movement_id"] = entry["_id"]
                event = MovementApproved(approval_id=approval["_id"], movement_id=entry["_id"],
                                         location_id=approval["location_id"], sku_id=approval["sku_id"],
                                         kind=approval["kind"], reason=approval["reason"], delta=entry["delta"],
                                         requested_by=approval["requested_by"], decided_by=principal.subject)
            else:
                event = MovementRejected(approval_id=approval["_id"], location_id=approval["location_id"],
                                         sku_id=approval["sku_id"], kind=approval["kind"], reason=approval["reason"],
                                         units=approval["units"], requested_by=approval["requested_by"],
                                         decided_by=principal.subject, note=note)
            approval = await core.approvals.save(approval, session)
            await core.outbox.record(session, event, subject=approval["_id"])
            self.mongo.after_commit(lambda: metrics.APPROVALS.labels(approval["kind"], decision).inc())
            return approval

        return approval_view(await transaction_replaying_duplicates(self.mongo, unit))

    async def page(self, principal: Principal, *, location_id: str | None, status: str | None,
                   cursor: str | None, limit: int) -> dict:
        """Approvals of the stores the caller may see, newest first."""
        filters = await self.core.readable_filter(principal, location_id)
        if status:
            filters["status"] = status
        before = decode_cursor(cursor, APPROVALS_SCOPE)
        if before is not None and not isinstance(before, str):
            raise bad_cursor()
        docs = await self.core.approvals.page(filters, before, limit + 1)
        return page_of(docs, limit, scope=APPROVALS_SCOPE, key=lambda d: d["_id"], view=approval_view)


MOVEMENTS = web.AppKey("movements", Movements)
APPROVALS = web.AppKey("approvals", Approvals)
