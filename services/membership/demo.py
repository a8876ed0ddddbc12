"""Idempotent demo loader: staff, coupon templates, a campaign, QR codes and members from the dataset."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from libs.logging import get_logger
from services.membership.domain import points as points_rules
from services.membership.handlers import template_doc
from services.membership.usecases import Membership

DATASET = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "dataset.json"
log = get_logger("membership.demo")


async def load_demo(svc: Membership, dataset_path: Path = DATASET) -> None:
    data = json.loads(dataset_path.read_text())
    await asyncio.gather(*[_load_staff(svc, person) for person in data.get("staff", [])])
    for template in data.get("coupon_templates", []):
        await svc.create_template(template_doc(template), replace=True)
    for campaign in data.get("campaigns", []):
        await svc.create_campaign({"_id": campaign["id"], "name": campaign["name"], "tag": campaign.get("tag"),
                                   "coupon_template_id": campaign.get("coupon_template_id"), "status": "active"},
                                  replace=True)
    for qr in data.get("qr_codes", []):
        await svc.create_qr({"_id": qr["code"], "kind": qr["kind"], "store_id": qr.get("store_id"),
                             "staff_id": qr.get("staff_id"), "campaign_id": qr.get("campaign_id"),
                             "status": "active"}, replace=True)
    for person in data.get("members", []):
        await _load_member(svc, person)
    log.info("demo.loaded", staff=len(data.get("staff", [])), members=len(data.get("members", [])))


async def _load_staff(svc: Membership, person: dict) -> None:
    existing = await svc.mongo.read_committed(lambda: svc.staff.get(person["id"]))
    if existing is not None:
        return  # keep whatever password the person has set since
    password_hash = await asyncio.to_thread(svc.passwords.hash, person["password"])
    doc = {"_id": person["id"], "username": person["username"], "name": person["name"], "roles": person["roles"],
           "store_ids": person.get("store_ids", []), "franchisee_id": person.get("franchisee_id"),
           "password_hash": password_hash, "status": "active"}
    await svc.mongo.transaction(lambda s: svc.staff.upsert(doc, s))


async def _load_member(svc: Membership, person: dict) -> None:
    async def unit(session):
        if await svc.members.get(person["id"], session) is not None:
            return
        member = await svc._register(session, source="demo", phone=person.get("phone"),
                                     locale=person.get("locale", "zh-CN"), name=person.get("name"),
                                     marketing_consent=bool(person.get("marketing_consent")), member_id=person["id"])
        if person.get("bound_store_id"):
            await svc.members.bind_if_unbound(member["_id"], member["created_at_ms"], {
                "bound_store_id": person["bound_store_id"], "bound_staff_id": person.get("bound_staff_id"),
                "bound_campaign_id": None,
                "bound_until_ms": member["created_at_ms"] + svc.settings.binding_days * 86_400_000}, session)
            await svc.members.add_tags(member["_id"], [f"store:{person['bound_store_id']}"], session)
        if person.get("points"):
            await svc._post_points(session, member, int(person["points"]), points_rules.OPENING,
                                   note="opening balance")

    await svc.mongo.transaction(unit)
