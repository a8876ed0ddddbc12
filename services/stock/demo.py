"""Demo data: the locations and stock of deploy/demo/dataset.json, loaded idempotently at start-up."""
from __future__ import annotations

import json
from pathlib import Path

from libs.logging import get_logger

log = get_logger("stock.demo")
DATASET = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "dataset.json"


async def load_demo_data(stock, path: Path = DATASET) -> None:
    dataset = json.loads(path.read_text())
    locations = [{"_id": loc["id"], **{k: v for k, v in loc.items() if k != "id"}, "active": True}
                 for loc in dataset.get("locations", [])]

    async def unit(session):
        for doc in locations:
            await stock.locations.add_if_missing(doc, session)
        for row in dataset.get("stock", []):
            # Never overwrite a level that exists: a restart must not reset real stock movements.
            await stock.levels.upsert_demo(row["location_id"], row["sku_id"], row["on_hand"],
                                           row.get("reorder_point", stock.settings.default_reorder_point), session)

    await stock.mongo.transaction(unit)
    log.info("stock.demo_loaded", locations=len(locations), levels=len(dataset.get("stock", [])))
