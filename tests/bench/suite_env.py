"""A private suite for the benchmarks, started by the same code as `make run`."""
from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path

from tests.support import delete_bus_namespace, free_port, new_namespace

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from suite import SERVICES, Suite  # noqa: E402


@contextlib.asynccontextmanager
async def private_suite(mongo_url: str, **env: str):
    state = Path(tempfile.mkdtemp(prefix="o2o-bench-"))
    namespace = new_namespace()
    suite = Suite(state_dir=state, ports={s: free_port() for s in SERVICES}, mongo_url=mongo_url,
                  bus_namespace=namespace, db_prefix="o2o" + namespace.replace(".", "_"),
                  extra_env={"GATEWAY_TRUSTED_PROXIES": '["127.0.0.1/32"]', "LOG_LEVEL": "WARNING", **env})
    try:
        import asyncio
        await asyncio.to_thread(suite.start)
        yield suite
    finally:
        suite.stop()
        await delete_bus_namespace(namespace)
        shutil.rmtree(state, ignore_errors=True)
