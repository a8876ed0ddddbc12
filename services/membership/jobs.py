"""Periodic jobs: dormancy, points expiry, coupon expiry, checkout-hold expiry, and picking up key rotations."""
from __future__ import annotations

from aiohttp import web

from libs.logging import get_logger
from services.membership.usecases import CHECKOUT_HOLDS, COUPONS, KEYS, MEMBERS, POINTS, TIERS

log = get_logger("membership.jobs")


async def mark_dormant(app: web.Application) -> None:
    marked = await app[MEMBERS].mark_dormant()
    if marked:
        log.info("members.dormant", marked=marked)
    retiered = await app[TIERS].retier_all()
    if retiered:
        log.info("members.retiered", changed=retiered)


async def expire_points(app: web.Application) -> None:
    expired = await app[POINTS].expire()
    if expired:
        log.info("points.expired", points=expired)


async def expire_coupons(app: web.Application) -> None:
    expired = await app[COUPONS].expire()
    if expired:
        log.info("coupons.expired", coupons=expired)


async def expire_holds(app: web.Application) -> None:
    """Checkout holds orders never committed nor released (a lost release, a crashed checkout) let go."""
    expired = await app[CHECKOUT_HOLDS].expire()
    if expired:
        log.info("checkout_holds.expired", holds=expired)


async def refresh_keys(app: web.Application) -> None:
    await app[KEYS].refresh()
