"""Periodic jobs of stock (registered in app.py)."""
from __future__ import annotations

from aiohttp import web

from services.stock.usecases import RECONCILIATION, RESERVATIONS


async def release_expired_reservations(app: web.Application) -> int:
    """Release every held reservation past its expiry (the reservation's ttl)."""
    return await app[RESERVATIONS].release_expired()


async def reconcile_reservations(app: web.Application) -> dict:
    """Prove every level's reserved count against its open reservations; repair and report drift."""
    return await app[RECONCILIATION].run()
