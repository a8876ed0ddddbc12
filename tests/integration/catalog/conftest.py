"""Catalog integration fixtures: the catalog app on the real broker and wire server, and RS256 tokens.

Membership (the token issuer) is another team's service; the tests mint their own RS256 tokens and the app's
verifier trusts the minter's keys, so the production verification path runs unchanged.
"""
from __future__ import annotations

import uuid

import aiohttp
import pytest

from libs.http import SETTINGS
from libs.service import MONGO
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings
from tests.support import ApiClient, Reply, TokenMint, serve, settings_for


@pytest.fixture(scope="session")
def catalog_mint() -> TokenMint:
    return TokenMint()


class CatalogApi(ApiClient):
    """Catalog over HTTP with the callers the tests use, and the app's database to check what was stored."""

    def __init__(self, app, base: str, http: aiohttp.ClientSession, mint: TokenMint) -> None:
        super().__init__(http, base)
        self.app, self.mint = app, mint
        self.settings = app[SETTINGS]
        self.service = mint.service("orders", "catalog")
        self.admin = mint.admin("stf_hq")
        self.customer = mint.member("mbr_1")
        self.hq = self.with_headers(self.admin)  # the same client, calling as HQ

    def bearer(self, sub: str, roles: list[str], **claims) -> dict:
        return self.mint.bearer(self.mint.token(sub, roles, **claims))

    @property
    def db(self):
        return self.app[MONGO].db

    async def create(self, body: dict, headers: dict | None = None) -> Reply:
        return await self.post("/catalog/products", body, headers=self.admin if headers is None else headers)

    async def quote(self, channel: str, sku_ids: list[str]) -> Reply:
        return await self.post("/catalog/internal/quote", {"channel": channel, "sku_ids": sku_ids},
                               headers=self.service)


@pytest.fixture
def catalog_settings(mongo_url, bus_namespace):
    """Settings of a catalog with demo data on database prefix `prefix` (the same prefix: the same database)."""
    def make(prefix: str, **overrides) -> CatalogSettings:
        return settings_for(CatalogSettings, mongo_url, bus_namespace, mongo_db_prefix=prefix, demo_data=True,
                            **overrides)
    return make


@pytest.fixture
async def catalog_api(catalog_settings, catalog_mint, request):
    """A fresh catalog database per test (demo data loaded), the session's bus namespace."""
    settings = catalog_settings(f"ct{uuid.uuid4().hex[:10]}_", **(getattr(request, "param", {}) or {}))
    async with serve(create_app, settings, catalog_mint.jwks) as (app, base):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            yield CatalogApi(app, base, http, catalog_mint)


def new_product(**overrides) -> dict:
    tag = uuid.uuid4().hex[:8]
    return {"name": f"Test Hoodie {tag}", "brand": "LOOP", "category": "tees", "status": "active",
            "skus": [{"barcode": f"69{tag}01", "attributes": {"size": "M"},
                      "price": {"base": 10000, "channels": {"app": 9500}}, "cost_price": 4000}], **overrides}


@pytest.fixture
def product_body():
    return new_product
