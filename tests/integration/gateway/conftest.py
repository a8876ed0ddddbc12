"""Fixtures of the gateway tests: membership's signing key and JWKS, and the real catalog service behind it.

Module-scoped async fixtures run on the module's event loop; test modules here declare
`pytestmark = pytest.mark.asyncio(loop_scope="module")`.
"""
from __future__ import annotations

import uuid

import aiohttp
import pytest
import pytest_asyncio
from tests.integration.gateway.gateway_kit import TokenMint, jwks_server

from tests.support import running_app, settings_for


@pytest.fixture(scope="session")
def signing_key() -> TokenMint:
    return TokenMint()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def jwks_url(signing_key):
    async with jwks_server(signing_key) as url:
        yield url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def catalog_url(mongo_url, bus_namespace, jwks_url):
    """The real catalog service (Mongo + broker), verifying tokens against the same JWKS."""
    from services.catalog.app import create_app
    from services.catalog.settings import CatalogSettings
    settings = settings_for(CatalogSettings, mongo_url, bus_namespace, jwks_url=jwks_url, demo_data=True,
                            mongo_db_prefix=f"gwc{uuid.uuid4().hex[:8]}_")
    async with running_app(create_app(settings), settings.port) as base:
        yield base


@pytest_asyncio.fixture(loop_scope="module")
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def suite_http():
    """One client for a module's calls through a suite of real services (generous timeout: argon2 and nx)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        yield session
