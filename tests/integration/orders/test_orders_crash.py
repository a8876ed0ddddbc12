"""Kill -9 the orders process (and, separately, the stock process) in the middle of a batch of
checkouts, restart it, and every order ends consistent: confirmed with its reservation held, or
cancelled / rejected with nothing held. Orders and stock run as real processes (`python -m services.<svc>`
configured by environment), membership and catalog in-process."""
from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp
import pytest
from pymongo import AsyncMongoClient

from tests.support import eventually, free_port, running_app, settings_for
from tests.integration.orders.kit import Harness, jwks_union
from tests.support import TokenMint

ROOT = Path(__file__).resolve().parents[3]
STORE, SKU = "loc_sh_jingan", "sku_tee_classic_bla_l"
BUYERS = 60


def subprocess_port() -> int:
    """A port for a service run as a subprocess, free now and below the kernel's ephemeral range.

    `free_port()` (bind to port 0) hands out ephemeral ports, and a subprocess binds its port seconds later (and
    again after its kill -9): meanwhile another test on the machine can be handed the same port and bind it,
    and `ready()` then hears a stranger answer. No bind to port 0 and no outgoing connection ever takes a
    port below the ephemeral range."""
    ephemeral = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ephemeral.read_text().split()[0]) if ephemeral.exists() else 32768
    for _ in range(100):
        port = random.randrange(max(1024, low - 12_000), low)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    return free_port()


class ServiceProcess:
    def __init__(self, name: str, env: dict[str, str], port: int, logs: Path) -> None:
        self.name, self.env, self.port, self.logs = name, env, port, logs
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.logs / f"{self.name}.{self.starts}.log", "wb")
        self.process = subprocess.Popen([sys.executable, "-m", f"services.{self.name}"], cwd=ROOT,
                                        env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT)

    async def ready(self, timeout: float = 30.0) -> None:
        async def answers():
            if self.process.poll() is not None:  # died starting: say why, rather than wait for a stranger
                log = (self.logs / f"{self.name}.{self.starts}.log").read_text(errors="replace")
                raise AssertionError(f"{self.name} exited with {self.process.returncode} while starting:\n"
                                     f"{log[-2000:]}")
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.get(f"http://127.0.0.1:{self.port}/readyz") as response:
                        return response.status == 200
            except aiohttp.ClientError:
                return False
        await eventually(answers, timeout=timeout, interval=0.2)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@contextlib.asynccontextmanager
async def crash_suite(mongo_url: str, namespace: str):
    from services.catalog.app import create_app as create_catalog
    from services.catalog.settings import CatalogSettings
    from services.membership.app import create_app as create_membership
    from services.membership.settings import MembershipSettings

    mint = TokenMint()
    prefix = f"ocr{uuid.uuid4().hex[:8]}_"
    ports = {name: free_port() for name in ("membership", "jwks")}  # bound at once, in this process
    ports.update({name: subprocess_port() for name in ("stock", "orders")})
    membership_url = f"http://127.0.0.1:{ports['membership']}"
    jwks_url = f"http://127.0.0.1:{ports['jwks']}/auth/jwks"
    common = dict(mongo_db_prefix=prefix, jwks_url=jwks_url, membership_url=membership_url, demo_data=True)
    logs = Path(tempfile.mkdtemp(prefix="orders-crash-"))
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running_app(jwks_union(membership_url, mint), ports["jwks"]))
        membership_settings = settings_for(MembershipSettings, mongo_url, namespace, port=ports["membership"],
                                           password_time_cost=1, password_memory_kib=8192, **common)
        await stack.enter_async_context(running_app(create_membership(membership_settings), ports["membership"]))
        catalog_settings = settings_for(CatalogSettings, mongo_url, namespace, **common)
        catalog_url = await stack.enter_async_context(running_app(create_catalog(catalog_settings),
                                                                  catalog_settings.port))
        shared = {"MONGO_URL": mongo_url, "MONGO_DB_PREFIX": prefix, "O2O_BUS_NAMESPACE": namespace,
                  "O2O_JWKS_URL": jwks_url, "MEMBERSHIP_URL": membership_url, "O2O_DEMO_DATA": "1",
                  "O2O_DEV_MODE": "1", "O2O_OUTBOX_POLL_INTERVAL_S": "0.2", "O2O_BUS_RETRY_DELAY_MS": "200",
                  "LOG_LEVEL": "WARNING"}
        stock = ServiceProcess("stock", {**shared, "STOCK_PORT": str(ports["stock"])}, ports["stock"], logs)
        stock_url = f"http://127.0.0.1:{ports['stock']}"
        orders = ServiceProcess("orders", {
            **shared, "ORDERS_PORT": str(ports["orders"]), "CATALOG_URL": catalog_url, "STOCK_URL": stock_url,
            "ORDERS_SWEEP_INTERVAL_S": "0.5", "ORDERS_STUCK_CHECKOUT_AFTER_S": "3", "ORDERS_PAYMENT_WINDOW_S": "12",
            "ORDERS_PAYMENT_ATTEMPT_TIMEOUT_S": "3", "ORDERS_UPSTREAM_TIMEOUT_S": "3"}, ports["orders"], logs)
        stack.callback(stock.stop)
        stack.callback(orders.stop)
        stock.start()
        orders.start()
        await stock.ready()
        await orders.ready()
        http = await stack.enter_async_context(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)))
        mongo = AsyncMongoClient(mongo_url, tz_aware=True)
        stack.push_async_callback(mongo.close)
        harness = Harness(http, mint, {"orders": f"http://127.0.0.1:{ports['orders']}", "stock": stock_url,
                                       "catalog": catalog_url, "membership": membership_url}, {})
        yield harness, {"stock": stock, "orders": orders}, mongo[f"{prefix}orders"], logs


async def buy(suite: Harness, buyer: str, placed: list, paid: list) -> str:
    """One shopper: place, then pay. Errors from a dying service are what a real client would see."""
    headers = suite.mint.member(buyer)
    body = {"channel": "app", "lines": [{"sku_id": SKU, "qty": 1}],
            "fulfilment": {"type": "pickup", "location_id": STORE}}
    try:
        status, order = await suite.place(body, headers, key=f"crash-{buyer}")
        if status != 201:
            return f"place:{status}"
        placed.append(order["id"])
        status, _ = await suite.pay(order["id"], headers)
        if status == 200:
            paid.append(order["id"])
        return f"pay:{status}"
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        return f"error:{type(exc).__name__}"


async def assert_consistent(suite: Harness, orders_db) -> dict[str, int]:
    """Every order in a final state, nothing left to do, and stock holding exactly what live orders need."""
    async def settled():
        docs = await orders_db["orders"].find({}, {"status": 1, "pending_actions": 1}).to_list()
        unsettled = [d for d in docs if d["status"] not in ("confirmed", "cancelled", "rejected")
                     or d.get("pending_actions")]
        return not unsettled and docs
    docs = await eventually(settled, timeout=60, interval=0.5)
    counts: dict[str, int] = {}
    for doc in docs:
        counts[doc["status"]] = counts.get(doc["status"], 0) + 1
        reservation = await suite.reservation(doc["_id"])
        if doc["status"] == "confirmed":
            assert reservation is not None and reservation["status"] == "reserved", (doc, reservation)
        else:
            assert reservation is None or reservation["status"] == "released", (doc, reservation)
    level = await suite.level(STORE, SKU)
    assert level["reserved"] == counts.get("confirmed", 0), (level, counts)
    return counts


async def run_batch_with_kill(suite: Harness, victim: ServiceProcess) -> list[str]:
    placed: list[str] = []
    paid: list[str] = []
    shoppers_at_once = asyncio.Semaphore(8)  # a stream of checkouts, not one burst

    async def shopper():
        async with shoppers_at_once:
            return await buy(suite, f"mbr_crash_{uuid.uuid4().hex[:8]}", placed, paid)

    batch = [asyncio.create_task(shopper()) for _ in range(BUYERS)]
    # Kill once the stream is well under way: some orders paid, others placed, most still to come.
    await eventually(lambda: len(paid) >= 3 or all(t.done() for t in batch), timeout=60, interval=0.02)
    victim.kill9()
    outcomes = await asyncio.gather(*batch)
    victim.start()
    await victim.ready()
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["orders", "stock"])
async def test_kill_minus_nine_mid_batch_leaves_every_order_consistent(mongo_url, bus_namespace, victim):
    async with crash_suite(mongo_url, bus_namespace) as (suite, processes, orders_db, logs):
        status, moved = await suite.stock_move({"kind": "receive", "location_id": STORE, "sku_id": SKU, "qty": 200,
                                                "key": f"crash-{uuid.uuid4().hex}"})
        assert status == 201, moved
        baseline = await suite.level(STORE, SKU)
        assert baseline["reserved"] == 0
        outcomes = await run_batch_with_kill(suite, processes[victim])
        counts = await assert_consistent(suite, orders_db)
        print(f"\nkill -9 {victim}: client outcomes {sorted(set(outcomes))}; final orders {counts}")
        assert any(o.startswith("error") or o.startswith("place:5") or o.startswith("pay:5") for o in outcomes), \
            "the kill interrupted nothing"
        assert counts.get("confirmed", 0) >= 1
        # After recovery the shop works again.
        member = suite.mint.member("mbr_after_crash")
        status, order = await suite.place({"channel": "app", "lines": [{"sku_id": SKU, "qty": 1}],
                                           "fulfilment": {"type": "pickup", "location_id": STORE}}, member)
        assert status == 201, order
        assert (await suite.pay(order["id"], member))[0] == 200
