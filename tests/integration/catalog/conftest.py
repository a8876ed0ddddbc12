"""Catalog integration fixtures: the catalog app on the real broker and wire server, and RS256 tokens.

Membership (the token issuer) is another team's service; the tests mint their own RS256 tokens and load
the matching JWKS into the app's verifier, so the production verification path runs unchanged.
"""
from __future__ import annotations

import json
import uuid

import aiohttp
import pytest

from libs.auth import VERIFIER
from libs.http import SETTINGS
from libs.service import MONGO
from libs.testing import TokenMint, running_app, settings_for
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings




@pytest.fixture(scope="session")
def catalog_mint() -> TokenMint:
    return TokenMint()


class CatalogApi:
    def __init__(self, app, base: str, http: aiohttp.ClientSession, mint: TokenMint) -> None:
        self.app, self.base, self.http, self.mint = app, base, http, mint
        self.settings = app[SETTINGS]
        self.service = self.bearer("svc:orders", ["service"])
        self.admin = self.bearer("stf_hq", ["hq_admin"], staff_id="stf_hq")
        self.customer = self.bearer("mbr_1", ["customer"], member_id="mbr_1")

    def bearer(self, sub: str, roles: list[str], **claims) -> dict:
        return {"Authorization": "Bearer " + self.mint.token(self.settings, sub, roles, **claims)}

    @property
    def db(self):
        return self.app[MONGO].db

    async def call(self, method: str, path: str, headers: dict | None = None, **kw) -> tuple[int, dict, dict]:
        async with self.http.request(method, self.base + path, headers=headers or {}, **kw) as response:
            raw = await response.read()
            return response.status, (json.loads(raw) if raw else None), dict(response.headers)

    async def create(self, body: dict, headers: dict | None = None) -> tuple[int, dict]:
        status, payload, _ = await self.call("POST", "/catalog/products", self.admin if headers is None else headers,
                                             json=body)
        return status, payload

    async def quote(self, channel: str, sku_ids: list[str]) -> tuple[int, dict]:
        status, payload, _ = await self.call("POST", "/catalog/internal/quote", self.service,
                                             json={"channel": channel, "sku_ids": sku_ids})
        return status, payload


@pytest.fixture
async def catalog_api(mongo_url, bus_namespace, catalog_mint, request):
    """A fresh catalog database per test (demo data loaded), the session's bus namespace."""
    overrides = {"demo_data": True, **(getattr(request, "param", {}) or {})}
    settings = settings_for(CatalogSettings, mongo_url, bus_namespace,
                            mongo_db_prefix=f"ct{uuid.uuid4().hex[:10]}_", **overrides)
    app = create_app(settings)
    app[VERIFIER].load_jwks(catalog_mint.jwks)
    async with running_app(app, settings.port) as base:
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
