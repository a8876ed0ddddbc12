"""Fixtures shared by every test folder: a real MongoDB wire server and a per-run bus namespace."""
from __future__ import annotations

import asyncio
import os

import pytest

from tests.support import NxServer, delete_bus_namespace, new_namespace


@pytest.fixture(scope="session")
def mongo_url():
    """TEST_MONGO_URL (e.g. a real replica set) or a private nx-27017 started for this run through the
    project's launcher scripts/nxd.py (a dead client's open transaction is rolled back; libs/README.md)."""
    if os.environ.get("TEST_MONGO_URL"):
        yield os.environ["TEST_MONGO_URL"]
        return
    server = NxServer().start()
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def bus_namespace():
    namespace = new_namespace()
    yield namespace
    asyncio.run(delete_bus_namespace(namespace))
