"""Periodic jobs of stock (registered in app.py)."""
from __future__ import annotations

from aiohttp import web

from services.stock.usecases import RESERVATIONS


async def release_expired_reservations(app: web.Application) -> int:
    """Release every held reservation past its expiry (the reservation's ttl)."""
    return await app[RESERVATIONS].release_expired()
