"""Test helpers: a real MongoDB wire server, a per-run bus namespace, services started in-process.

Integration tests use the real broker and a real MongoDB wire server: nx-27017 started on a free port
(or the server given by TEST_MONGO_URL, e.g. a real replica set). Every run gets its own bus namespace
and database prefix, and deletes its exchanges and queues afterwards.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aio_pika
from aiohttp import web

from libs.settings import ServiceSettings


class TokenMint:
    """RS256 tokens for tests, shaped like membership's; load `jwks` into a service's TokenVerifier."""

    def __init__(self) -> None:
        import json as _json

        import jwt
        from cryptography.hazmat.primitives.asymmetric import rsa
        self._jwt = jwt
        self.kid = f"test-{uuid.uuid4().hex[:8]}"
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = _json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        self.jwks = {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def token(self, settings, sub: str, roles: list[str], **claims) -> str:
        now = int(time.time())
        payload = {"sub": sub, "roles": roles, "iss": settings.jwt_issuer, "aud": settings.jwt_audience,
                   "iat": now, "exp": now + 3600, **claims}
        return self._jwt.encode(payload, self.private_key, algorithm="RS256", headers={"kid": self.kid})

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
SERVICES = ("gateway", "catalog", "stock", "orders", "membership", "notifications", "settlement")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def nx_binary() -> str:
    candidate = Path(sys.executable).with_name("nx-27017")
    return str(candidate) if candidate.exists() else "nx-27017"


class NxServer:
    """An nx-27017 MongoDB wire server with its own data dir, pid file and log (one per test run)."""

    def __init__(self, data_dir: str | None = None, port: int | None = None) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="o2o-nx-")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self) -> NxServer:
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [nx_binary(), "--data-dir", self.data_dir, "-p", str(self.port), "--pid-file",
             os.path.join(self.data_dir, "nx.pid"), "--log-file", os.path.join(self.data_dir, "nx.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def new_namespace() -> str:
    return f"t{uuid.uuid4().hex[:8]}."


async def delete_bus_namespace(namespace: str, amqp_url: str = AMQP_URL) -> None:
    """Delete every exchange and queue a run created under `namespace`."""
    from libs.bus import Names
    names = Names(namespace)
    queues = [names.audit] + [q for s in SERVICES for q in (names.queue(s), names.retry_queue(s), names.dlq(s))]
    queues += [q for q in _broker_queue_names() if q.startswith(namespace)]
    connection = await aio_pika.connect(amqp_url)
    try:
        for queue in dict.fromkeys(queues):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
            with contextlib.suppress(Exception):
                await channel.close()
        for exchange in (names.exchange, names.dlx):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(exchange)
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()


def _broker_queue_names() -> list[str]:
    try:
        out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip() and line.strip() != "name"]


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
