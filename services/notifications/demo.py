"""Idempotent demo loader: the demo members' contact data, so demo events reach someone at once."""
from __future__ import annotations

import json
from pathlib import Path

from services.notifications.domain.policy import normalize_locale
from services.notifications.usecases.directory import Directory

DATASET = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "dataset.json"


async def load_demo(directory: Directory, path: Path = DATASET) -> int:
    dataset = json.loads(path.read_text(encoding="utf-8"))
    members = [(member["id"], {
        "kind": "member", "member_id": member["id"], "phone": member.get("phone"), "email": member.get("email"),
        "name": member.get("name"), "locale": normalize_locale(member.get("locale")),
        "marketing_consent": bool(member.get("marketing_consent", False))}) for member in dataset.get("members", [])]
    franchisees = [(f"franchisee:{franchisee['id']}", {
        "kind": "franchisee", "name": franchisee.get("name"),
        "email": franchisee.get("email") or f"{franchisee['id']}@franchise.o2o.example"})
        for franchisee in dataset.get("franchisees", [])]
    await directory.load(members + franchisees)
    return len(members)
