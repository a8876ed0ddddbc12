"""A service under test: its settings for this run, served in-process on a free port, polled for effects."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from libs.settings import ServiceSettings
from tests.support.nx import free_port


def settings_for(cls: type[ServiceSettings], mongo_url: str, namespace: str, **overrides) -> ServiceSettings:
    """Settings of a service for a test run: its own DB prefix and bus namespace, a free port."""
    prefix = "o2o" + namespace.replace(".", "_")
    values = dict(mongo_url=mongo_url, mongo_db_prefix=prefix, bus_namespace=namespace, port=free_port(),
                  bus_retry_delay_ms=200, outbox_poll_interval_s=0.2, dev_mode=True)
    values.update(overrides)
    return cls(**values)


@contextlib.asynccontextmanager
async def running_app(app: web.Application, port: int) -> AsyncIterator[str]:
    """Serve an aiohttp app on 127.0.0.1:port for the duration of the block; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def eventually(check: Callable[[], object], timeout: float = 15.0, interval: float = 0.1):
    """Poll `check` (sync or async) until it returns a truthy value; raise AssertionError at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def serve(create_app: Callable[[ServiceSettings], web.Application], settings: ServiceSettings,
                jwks: dict | None = None) -> AsyncIterator[tuple[web.Application, str]]:
    """The one service fixture: build the app from `settings`, trust the test minter's keys, serve it.

    Yields `(app, base_url)`; the app's cleanup contexts (Mongo, bus, relay, consumers, jobs) run around it.
    """
    from libs.auth import VERIFIER
    app = create_app(settings)
    if jwks is not None and VERIFIER in app:
        app[VERIFIER].load_jwks(jwks)
    async with running_app(app, settings.port) as base:
        yield app, base
