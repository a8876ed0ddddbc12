"""Idempotent start-up loader: the default split rule always, and the demo locations when demo data is on.

Orders' events carry the fulfilling location's ownership and franchisee; the local copy of the locations
is the fallback for events that do not (fixed ids, so reloading changes nothing)."""
from __future__ import annotations

import json
from pathlib import Path

from libs.logging import get_logger
from services.settlement.usecases import Journal, SplitRules

DATASET = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "dataset.json"
log = get_logger("settlement.demo")


def demo_locations(path: Path = DATASET) -> list[dict]:
    dataset = json.loads(path.read_text(encoding="utf-8"))
    return [{"_id": loc["id"], "name": loc.get("name"), "kind": loc.get("kind", "store"),
             "ownership": loc.get("ownership", "direct"), "franchisee_id": loc.get("franchisee_id")}
            for loc in dataset.get("locations", [])]


async def load_start_up_data(rules: SplitRules, journal: Journal, demo_data: bool) -> None:
    await rules.ensure_default()
    docs = demo_locations() if demo_data else []
    if docs:
        await journal.remember_locations(docs)
    log.info("settlement.start_up_data_loaded", locations=len(docs))
