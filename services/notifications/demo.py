"""Idempotent demo loader: the demo members' contact data, so demo events reach someone at once."""
from __future__ import annotations

import json
from pathlib import Path

from libs.mongo import Mongo
from services.notifications.domain.policy import normalize_locale
from services.notifications.repository import RecipientDirectory

DATASET = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "dataset.json"


async def load_demo(mongo: Mongo, path: Path = DATASET) -> int:
    dataset = json.loads(path.read_text(encoding="utf-8"))
    directory = RecipientDirectory(mongo)

    async def unit(session):
        for member in dataset.get("members", []):
            await directory.upsert(member["id"], {
                "kind": "member", "member_id": member["id"], "phone": member.get("phone"),
                "email": member.get("email"), "name": member.get("name"),
                "locale": normalize_locale(member.get("locale")),
                "marketing_consent": bool(member.get("marketing_consent", False))}, session)
        for franchisee in dataset.get("franchisees", []):
            await directory.upsert(f"franchisee:{franchisee['id']}", {
                "kind": "franchisee", "name": franchisee.get("name"),
                "email": franchisee.get("email") or f"{franchisee['id']}@franchise.o2o.example"}, session)
        return len(dataset.get("members", []))

    return await mongo.transaction(unit)
