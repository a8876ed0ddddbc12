"""The whole suite started by the same code as `make run` (scripts/suite.py), on private ports, a private
state folder, its own nx-27017 (or TEST_MONGO_URL), bus namespace and database prefix."""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

import aiohttp
import pytest

from tests.support import delete_bus_namespace, free_port, new_namespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from suite import SERVICES, Suite  # noqa: E402


@pytest.fixture(scope="session")
def suite():
    state = Path(tempfile.mkdtemp(prefix="o2o-e2e-"))
    namespace = new_namespace()
    suite = Suite(state_dir=state, ports={s: free_port() for s in SERVICES},
                  mongo_url=os.environ.get("TEST_MONGO_URL") or None, nx_port=free_port(),
                  bus_namespace=namespace, db_prefix="o2o" + namespace.replace(".", "_"),
                  extra_env={"O2O_BUS_RETRY_DELAY_MS": "300", "O2O_OUTBOX_POLL_INTERVAL_S": "0.2",
                             "LOG_LEVEL": "INFO",
                             # Simulated phones each come from their own address, as behind a load balancer.
                             "GATEWAY_TRUSTED_PROXIES": '["127.0.0.1/32"]'})
    try:
        suite.start()
    except BaseException:
        for log in sorted(suite.logs.glob("*.log")):
            tail = log.read_text(errors="replace")[-3000:]
            print(f"==== {log.name} ====\n{tail}")
        suite.stop()
        raise
    yield suite
    suite.stop()
    asyncio.run(delete_bus_namespace(namespace))
    if not os.environ.get("O2O_KEEP_E2E_STATE"):
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def event_log(suite):
    """Every event published during the e2e run, captured from the bus by a background thread's loop."""
    import threading
    from tests.e2e.client import BusTap

    loop = asyncio.new_event_loop()
    tap = BusTap(suite.bus_namespace)
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(tap.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True, name="e2e-event-log")
    thread.start()
    ready.wait(30)
    yield tap.events
    asyncio.run_coroutine_threadsafe(tap.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


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
