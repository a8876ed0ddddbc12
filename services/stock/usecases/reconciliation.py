"""Reconciliation: prove each level's `reserved` against the reservations that hold it, and repair drift.

The fast path decides a reservation by a guarded `$inc` on the level and then writes the reservation, with no
transaction between the two; a crash in between leaves units reserved that no reservation holds (and a bug
could do worse). This job sums the open (held) reservations per level, compares, and repairs a level that
is out of line in its own unit of work: `reserved` set to that sum, `available` to on_hand - reserved, and
a ledger movement (kind `reconciliation`, reason `reconciliation`) saying by how much. A level that the
fast path touched in the last `STOCK_RECONCILE_GRACE_S` is left to the next run: its reservation may still
be on its way. Reported as `o2o_stock_reservation_drift_total{kind}` and the gauge of levels found.
"""
from __future__ import annotations

from aiohttp import web

from libs.clock import now_ms
from libs.logging import get_logger
from services.stock import metrics
from services.stock.repository import level_id
from services.stock.usecases.core import StockCore

log = get_logger("stock.reconciliation")


def held_per_level(reservations: list[dict]) -> dict[str, int]:
    """The units the given open reservations hold, per level id."""
    held: dict[str, int] = {}
    for doc in reservations:
        for allocation in doc.get("allocations", []):
            for line in allocation.get("lines", []):
                key = level_id(allocation["location_id"], line["sku_id"])
                held[key] = held.get(key, 0) + line["qty"]
    return held


def drift_kind(level: dict, expected: int) -> str | None:
    if level["reserved"] > expected:
        return "over_reserved"  # units held that no reservation holds: they would never be sold
    if level["reserved"] < expected:
        return "under_reserved"  # reservations hold units the level does not count: oversell risk
    if level["available"] != level["on_hand"] - level["reserved"]:
        return "available"
    return None


class Reconciliation:
    def __init__(self, core: StockCore) -> None:
        self.core = core
        self.mongo = core.mongo
        self.settings = core.settings

    async def run(self) -> dict:
        """One pass over every level that holds something or should; answers what it found and repaired."""
        core = self.core
        started = now_ms()
        held = held_per_level(await self.mongo.read_committed(lambda: core.reservations.open_allocations()))
        levels = await self.mongo.read_committed(lambda: core.levels.reserved_or_in(sorted(held)))
        suspects = [doc for doc in levels if drift_kind(doc, held.get(doc["_id"], 0))]
        found, repaired, deferred = 0, [], 0
        for suspect in suspects:
            outcome = await self.mongo.transaction(lambda s, lvl=suspect["_id"]: self._repair(lvl, started, s))
            if outcome == "deferred":
                deferred += 1
            elif outcome is not None:
                found += 1
                repaired.append(outcome)
                metrics.RESERVATION_DRIFT.labels(outcome["kind"]).inc()
        metrics.DRIFT_LEVELS.set(found)
        metrics.RECONCILIATION_RUNS.inc()
        for item in repaired:
            await core.note_available(item["location_id"], item["sku_id"], item["available"],
                                      falling=item["available"] <= 0)
            if item["available"] > item["available_before"]:
                core.stock_given_back(item["sku_id"])
        if repaired:
            log.warning("stock.reservation_drift_repaired", levels=len(repaired),
                        drift=[{k: item[k] for k in ("level_id", "kind", "reserved_before", "reserved")}
                               for item in repaired[:20]])
        return {"checked": len(levels), "found": found, "deferred": deferred, "repaired": repaired}

    async def _repair(self, lvl: str, started_ms: int, session) -> dict | str | None:
        core = self.core
        level = await core.levels.by_id(lvl, session)
        if level is None:
            return None
        if level.get("held_at_ms", 0) > started_ms - self.settings.reconcile_grace_s * 1000:
            return "deferred"
        # Inside the unit of work: the reservations and the level are read together.
        expected = held_per_level(await core.reservations.open_allocations(None, session)).get(lvl, 0)
        kind = drift_kind(level, expected)
        if kind is None:
            return None
        await core.levels.repair(level, expected, session)
        drift = level["reserved"] - expected
        await core.append_ledger(session, key=f"reconciliation:{lvl}:{core.next_seq()}", kind="reconciliation",
                                 location_id=level["location_id"], sku_id=level["sku_id"], qty=abs(drift), delta=0,
                                 level_before={**level, "available": level["on_hand"] - expected},
                                 variance=drift, reason="reconciliation", actor="system:reconciliation")
        return {"level_id": lvl, "location_id": level["location_id"], "sku_id": level["sku_id"], "kind": kind,
                "reserved_before": level["reserved"], "reserved": expected, "available_before": level["available"],
                "available": level["on_hand"] - expected}


RECONCILIATION = web.AppKey("reconciliation", Reconciliation)
