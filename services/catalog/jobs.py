"""Periodic jobs of catalog (registered in app.py)."""
from __future__ import annotations

from aiohttp import web

from services.catalog.usecases import PRICES


async def apply_due_price_changes(app: web.Application) -> int:
    """Apply the scheduled price changes whose time has come (quotes already honour them the moment they are due)."""
    return await app[PRICES].apply_due_changes()
