"""Demo data: the locations and stock of deploy/demo/dataset.json, loaded idempotently at start-up."""
from __future__ import annotations

import json
from pathlib import Path

from services.stock.usecases import Locations

DATASET = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "dataset.json"


async def load_demo_data(locations: Locations, path: Path = DATASET) -> None:
    dataset = json.loads(path.read_text())
    docs = [{"_id": loc["id"], **{k: v for k, v in loc.items() if k != "id"}, "active": True}
            for loc in dataset.get("locations", [])]
    # Never overwrite a level that exists: a restart must not reset real stock movements.
    await locations.load_demo(docs, dataset.get("stock", []))
