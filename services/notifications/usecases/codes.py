"""The one-time codes of messages (pickup codes, login codes): fetched from the service that owns them when the
message is sent, over an authenticated internal call, so they never travel on the bus or sit in a delivery."""
from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from libs.clients import ServiceClient, UpstreamError
from libs.problems import Problem


class CodeUnavailable(Exception):
    """The code cannot be had. `permanent`: its owner says there is none (used, expired, order moved on)."""

    def __init__(self, detail: str, permanent: bool) -> None:
        super().__init__(detail)
        self.permanent = permanent


class Codes:
    def __init__(self, orders: ServiceClient, membership: ServiceClient) -> None:
        self.orders, self.membership = orders, membership

    async def fetch(self, ref: dict) -> str:
        key = quote(ref["key"], safe="")
        try:
            if ref["owner"] == "orders":
                return (await self.orders.get(f"/orders/internal/orders/{key}/pickup-code"))["pickup_code"]
            return (await self.membership.get(f"/members/internal/otp-codes/{key}"))["code"]
        except UpstreamError as exc:
            raise CodeUnavailable(f"{exc.service} has no code to send: {exc.problem_type or exc.status}",
                                  permanent=exc.status in (404, 409, 410, 422)) from None
        except Problem as exc:
            raise CodeUnavailable(f"the code's owner is unavailable: {exc}", permanent=False) from None


CODES = web.AppKey("notifications_codes", Codes)
