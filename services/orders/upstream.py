"""Calls to catalog, stock and membership, exactly as the contracts in libs/README.md describe them.

Each method is one idempotent call; problems from the other service come back as `UpstreamError` with
their problem type, which the saga turns into the caller's answer.
"""
from __future__ import annotations

import asyncio
import time

import aiohttp
from urllib.parse import quote
from aiohttp import web

from libs.clients import ServiceClient, ServiceTokenProvider, UpstreamError
from services.orders.settings import OrdersSettings


class Upstreams:
    def __init__(self, settings: OrdersSettings) -> None:
        self.settings = settings
        self.session: aiohttp.ClientSession | None = None
        self.catalog: ServiceClient | None = None
        self.stock: ServiceClient | None = None
        self.membership: ServiceClient | None = None
        self._quotes: dict[tuple, tuple[float, dict]] = {}
        self._quoting: dict[tuple, asyncio.Future] = {}
        self._bindings: dict[str, tuple[float, asyncio.Future]] = {}

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
        tokens = ServiceTokenProvider(self.settings.membership_url, "orders", self.settings.client_secret)
        timeout = self.settings.upstream_timeout_s
        self.catalog = ServiceClient("catalog", self.settings.catalog_url, self.session, tokens, timeout)
        self.stock = ServiceClient("stock", self.settings.stock_url, self.session, tokens, timeout)
        self.membership = ServiceClient("membership", self.settings.membership_url, self.session, tokens, timeout)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    # -- catalog ---------------------------------------------------------------------------------
    async def quote(self, channel: str, sku_ids: list[str]) -> dict[str, dict]:
        """Prices in force now. Identical quotes within `quote_cache_s` share one call to catalog (a flash
        sale asks thousands of times a second for the same SKU); a price change shows within that delay."""
        key = (channel, tuple(sorted(set(sku_ids))))
        now = time.monotonic()
        cached = self._quotes.get(key)
        if cached is not None and now - cached[0] < self.settings.quote_cache_s:
            return cached[1]
        pending = self._quoting.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_quote(channel, list(key[1])))
            self._quoting[key] = pending
            pending.add_done_callback(lambda _: self._quoting.pop(key, None))
        items = await asyncio.shield(pending)
        if len(self._quotes) > 10_000:
            self._quotes.clear()
        self._quotes[key] = (now, items)
        return items

    async def _fetch_quote(self, channel: str, sku_ids: list[str]) -> dict[str, dict]:
        body = await self.catalog.post("/catalog/internal/quote", {"channel": channel, "sku_ids": sku_ids})
        return {item["sku_id"]: item for item in body["items"]}

    async def sku_for_code(self, code: str) -> str | None:
        """A code scanned in store (barcode / QR payload) to its SKU id; None when catalog does not know it."""
        try:
            body = await self.catalog.get(f"/catalog/skus/by-code/{quote(code, safe='')}")
        except UpstreamError as exc:
            if exc.status == 404:
                return None
            raise
        return body["id"]

    # -- stock -----------------------------------------------------------------------------------
    async def reserve(self, order_id: str, mode: str, lines: list[dict], *, location_id: str | None,
                      destination: dict | None, ttl_s: int) -> dict:
        payload = {"order_id": order_id, "mode": mode, "lines": lines, "ttl_s": ttl_s}
        if location_id:
            payload["location_id"] = location_id
        if destination:
            payload["destination"] = destination
        return await self.stock.post("/stock/internal/reservations", payload)

    async def reservation_action(self, order_id: str, action: str, payload: dict | None = None) -> None:
        """commit | release | extend. A reservation stock never made needs no release, and one that is no
        longer held (committed when the goods left, or released) needs no extension."""
        try:
            await self.stock.post(f"/stock/internal/reservations/{order_id}/{action}", payload or {})
        except UpstreamError as exc:
            if action == "release" and exc.status == 404:
                return
            if action == "extend" and exc.status in (404, 409):
                return
            raise

    async def return_to_stock(self, location_id: str, sku_id: str, qty: int, key: str) -> None:
        await self.stock.post("/stock/movements", {"kind": "return_to_stock", "location_id": location_id,
                                                   "sku_id": sku_id, "qty": qty, "key": key})

    # -- membership ------------------------------------------------------------------------------
    async def hold_benefits(self, payload: dict) -> dict:
        return await self.membership.post("/members/internal/checkout-holds", payload)

    async def hold_action(self, order_id: str, action: str) -> None:
        """commit | release; a hold membership never made needs no release."""
        try:
            await self.membership.post(f"/members/internal/checkout-holds/{order_id}/{action}", {})
        except UpstreamError as exc:
            if action == "release" and exc.status == 404:
                return
            raise

    async def attribution(self, member_id: str, scan_token: str | None = None) -> dict:
        """The member's binding (store / assistant / campaign), kept per member for `attribution_cache_s`:
        concurrent and repeated checkouts of one member share one call (a new binding shows within that
        delay; a failed lookup is not kept). With the scan token their checkout named, asked afresh: the QR
        they scanned (`scan`)."""
        if scan_token:
            return await self._fetch_attribution(member_id, scan_token)
        now = time.monotonic()
        cached = self._bindings.get(member_id)
        if cached is None or now - cached[0] >= self.settings.attribution_cache_s:
            if len(self._bindings) > 10_000:
                self._bindings.clear()
            cached = (now, asyncio.ensure_future(self._fetch_attribution(member_id)))
            self._bindings[member_id] = cached
            cached[1].add_done_callback(
                lambda done: done.cancelled() or done.exception() is None or self._bindings.pop(member_id, None))
        return await asyncio.shield(cached[1])

    async def _fetch_attribution(self, member_id: str, scan_token: str | None = None) -> dict:
        path = f"/members/internal/members/{member_id}/attribution"
        if scan_token:
            path += f"?scan_token={quote(scan_token)}"
        try:
            return await self.membership.get(path)
        except UpstreamError as exc:
            if exc.status == 404:
                return {}
            raise


UPSTREAMS = web.AppKey("upstreams", Upstreams)
