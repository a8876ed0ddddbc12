"""The whole suite started by the same code as `make run` (scripts/suite.py), on private ports, a private
state folder, its own nx-27017 (or TEST_MONGO_URL), bus namespace and database prefix."""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support import delete_bus_namespace, free_port, new_namespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from suite import SERVICES, Suite  # noqa: E402


@contextlib.contextmanager
def private_suite(prefix: str, extra_env: dict[str, str] | None = None, **options) -> Iterator[Suite]:
    """A whole suite of its own (ports, state folder, nx, bus namespace, database prefix), started by the same
    code as `make run`; `extra_env` adds to the e2e defaults, `options` go to Suite (e.g. replicas=2)."""
    state = Path(tempfile.mkdtemp(prefix=prefix))
    namespace = new_namespace()
    env = {"O2O_BUS_RETRY_DELAY_MS": "300", "O2O_OUTBOX_POLL_INTERVAL_S": "0.2", "LOG_LEVEL": "INFO",
           # Simulated phones each come from their own address, as behind a load balancer.
           "GATEWAY_TRUSTED_PROXIES": '["127.0.0.1/32"]', **(extra_env or {})}
    suite = Suite(state_dir=state, ports={s: free_port() for s in SERVICES},
                  mongo_url=os.environ.get("TEST_MONGO_URL") or None, nx_port=free_port(),
                  bus_namespace=namespace, db_prefix="o2o" + namespace.replace(".", "_"), extra_env=env, **options)
    try:
        suite.start()
    except BaseException:
        for log in sorted(suite.logs.glob("*.log")):
            tail = log.read_text(errors="replace")[-3000:]
            print(f"==== {log.name} ====\n{tail}")
        suite.stop()
        raise
    try:
        yield suite
    finally:
        suite.stop()
        asyncio.run(delete_bus_namespace(namespace))
        if not os.environ.get("O2O_KEEP_E2E_STATE"):
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def suite():
    with private_suite("o2o-e2e-") as suite:
        yield suite


@contextlib.contextmanager
def captured_events(namespace: str) -> Iterator[list[dict]]:
    """Every event published on a bus namespace while the block runs, captured by a background thread's loop
    (so synchronous fixtures and any test's event loop can share it)."""
    import threading
    from tests.e2e.client import BusTap

    loop = asyncio.new_event_loop()
    tap = BusTap(namespace)
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(tap.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True, name="e2e-event-log")
    thread.start()
    ready.wait(30)
    try:
        yield tap.events
    finally:
        asyncio.run_coroutine_threadsafe(tap.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="session")
def event_log(suite):
    """Every event published during the e2e run."""
    with captured_events(suite.bus_namespace) as events:
        yield events


@pytest.fixture(autouse=True)
def _capture_events(request):
    """Start the session's event log before the first e2e test (only where the suite is used)."""
    if "suite" in request.fixturenames or request.node.get_closest_marker("e2e"):
        request.getfixturevalue("event_log")


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def api(suite):
    return suite.url("gateway") + "/api/v1"
