"""Idempotent demo loader: staff, coupon templates, a campaign, QR codes and members from the dataset."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web

from libs.logging import get_logger
from services.membership.usecases import COUPONS, MEMBERS, QR_CODES, STAFF, template_doc

DATASET = Path(__file__).resolve().parents[2] / "deploy" / "demo" / "dataset.json"
log = get_logger("membership.demo")


async def load_demo(app: web.Application, dataset_path: Path = DATASET) -> None:
    data = json.loads(dataset_path.read_text())
    await asyncio.gather(*[app[STAFF].ensure(
        {"_id": p["id"], "username": p["username"], "name": p["name"], "roles": p["roles"],
         "store_ids": p.get("store_ids", []), "franchisee_id": p.get("franchisee_id")}, p["password"])
        for p in data.get("staff", [])])
    for template in data.get("coupon_templates", []):
        await app[COUPONS].create_template(template_doc(template), replace=True)
    for campaign in data.get("campaigns", []):
        await app[COUPONS].create_campaign({"_id": campaign["id"], "name": campaign["name"],
                                            "tag": campaign.get("tag"),
                                            "coupon_template_id": campaign.get("coupon_template_id"),
                                            "status": "active"}, replace=True)
    for qr in data.get("qr_codes", []):
        await app[QR_CODES].create({"_id": qr["code"], "kind": qr["kind"], "store_id": qr.get("store_id"),
                                    "staff_id": qr.get("staff_id"), "campaign_id": qr.get("campaign_id"),
                                    "status": "active"}, replace=True)
    for person in data.get("members", []):
        await app[MEMBERS].ensure_demo(person)
    log.info("demo.loaded", staff=len(data.get("staff", [])), members=len(data.get("members", [])))
