"""Periodic jobs: dormancy, points expiry, coupon expiry, and picking up key rotations done elsewhere."""
from __future__ import annotations

from aiohttp import web

from libs.auth import VERIFIER
from libs.logging import get_logger
from services.membership.domain import coupons as coupon_rules
from services.membership.handlers import MEMBERSHIP
from services.membership.repository import now_ms

log = get_logger("membership.jobs")


async def mark_dormant(app: web.Application) -> None:
    marked = await app[MEMBERSHIP].mark_dormant()
    if marked:
        log.info("members.dormant", marked=marked)
    retiered = await app[MEMBERSHIP].retier_all()
    if retiered:
        log.info("members.retiered", changed=retiered)


async def expire_points(app: web.Application) -> None:
    expired = await app[MEMBERSHIP].expire_points()
    if expired:
        log.info("points.expired", points=expired)


async def expire_coupons(app: web.Application) -> None:
    svc = app[MEMBERSHIP]
    now = now_ms()
    expired = 0
    for coupon in await svc.mongo.read_committed(lambda: svc.coupons.expired_issued(now)):
        async def unit(session, code=coupon["_id"]):
            return await svc.coupons.move_state(code, coupon_rules.ISSUED, {"state": coupon_rules.EXPIRED}, session)

        expired += bool(await svc.mongo.transaction(unit))
    if expired:
        log.info("coupons.expired", coupons=expired)


async def refresh_keys(app: web.Application) -> None:
    keys = app[MEMBERSHIP].keys
    await keys.refresh()
    app[VERIFIER].load_jwks(keys.jwks())
