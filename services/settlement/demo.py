"""Idempotent start-up loader: the default split rule always, and the demo locations when demo data is on.

Orders' events carry the fulfilling location's ownership and franchisee; the local copy of the locations
is the fallback for events that do not (fixed ids, so reloading changes nothing)."""
from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from libs.http import SETTINGS
from libs.logging import get_logger
from libs.service import MONGO
from services.settlement.domain.rules import DEFAULT_RULE
from services.settlement.repository import LocationRepository, SplitRuleRepository

DATASET = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "dataset.json"
log = get_logger("settlement.demo")


def demo_locations(path: Path = DATASET) -> list[dict]:
    dataset = json.loads(path.read_text(encoding="utf-8"))
    return [{"_id": loc["id"], "name": loc.get("name"), "kind": loc.get("kind", "store"),
             "ownership": loc.get("ownership", "direct"), "franchisee_id": loc.get("franchisee_id")}
            for loc in dataset.get("locations", [])]


async def load_start_up_data(app: web.Application) -> None:
    mongo = app[MONGO]
    rules, locations = SplitRuleRepository(mongo), LocationRepository(mongo)
    docs = demo_locations() if app[SETTINGS].demo_data else []

    async def unit(session):
        await rules.add_if_absent(DEFAULT_RULE, session)
        for doc in docs:
            await locations.upsert(doc, session)

    await mongo.transaction(unit)
    log.info("settlement.start_up_data_loaded", locations=len(docs))
