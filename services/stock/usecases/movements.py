"""Movements: what staff (and orders, for returns) do to stock at a location, each one line of the ledger."""
from __future__ import annotations

from aiohttp import web

from libs.clock import now_ms
from libs.ids import new_id
from libs.mongo import ConcurrencyConflict
from libs.pagination import bad_cursor, decode_cursor, page_of
from libs.principal import Principal
from libs.refusal import INVALID
from services.stock.domain import model
from services.stock.domain.model import StockError
from services.stock.usecases.core import (StockCore, fingerprint, may_write_at, movement_view,
                                          transaction_replaying_duplicates)

MOVEMENTS_SCOPE = "stock.movements"


class Movements:
    """The movement ledger: receive, sale, adjust, count, transfers, returns; idempotent by key."""

    def __init__(self, core: StockCore) -> None:
        self.core = core
        self.mongo = core.mongo

    async def record(self, movement: dict, principal: Principal) -> dict:
        """Apply one movement and append it to the ledger; a replayed key answers the first result."""
        if principal.has_scope("stock:returns") and movement["kind"] == "return_to_stock":
            pass  # orders books a return taken back at any store
        elif movement["kind"] == "transfer_in":
            transfer = await self.core.transfers.get(movement["transfer_id"])
            may_write_at(principal, transfer["to_location_id"] if transfer else movement.get("location_id"))
        else:
            may_write_at(principal, movement.get("location_id"))
        entry = await transaction_replaying_duplicates(
            self.mongo, lambda s: self._record(movement, principal.subject, s))
        return movement_view(entry)

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

    async def _record(self, movement: dict, actor: str, session) -> dict:
        core = self.core
        wanted = fingerprint(movement)
        existing = await core.ledger.by_key(movement["key"], session)
        if existing is not None:
            if existing.get("request_fingerprint") != wanted:
                raise StockError("movement-key-reused", "this movement key was used for a different movement",
                                 kind=INVALID)
            return existing
        kind = movement["kind"]
        if kind == "transfer_in":
            return await self._receive_transfer(movement, wanted, actor, session)
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
        return await core.append_ledger(session, key=movement["key"], kind=kind, location_id=location["_id"],
                                        sku_id=movement["sku_id"], qty=movement.get("qty"), delta=change.on_hand,
                                        level_before=level, variance=change.variance, reason=movement.get("reason"),
                                        transfer_id=transfer_id, actor=actor, reference=movement.get("reference"),
                                        fingerprint_=wanted)

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
                                        reason=movement.get("reason"))


MOVEMENTS = web.AppKey("movements", Movements)
