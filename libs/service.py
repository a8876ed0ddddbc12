"""Assembly of a domain service: Mongo, bus, outbox relay, consumers and periodic jobs as cleanup contexts."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from typing import Any

from aiohttp import web
from pymongo.errors import DuplicateKeyError

from libs import metrics
from libs.auth import TokenVerifier, auth_middleware, VERIFIER
from libs.bus import Bus
from libs.http import add_readiness_check, create_base_app
from libs.idempotency import HEARTBEAT_S, IDEMPOTENCY_INDEXES, PROCESS_OWNER, beat
from libs.logging import configure_logging, get_logger
from libs.mongo import IndexSpec, Mongo
from libs.outbox import OUTBOX_INDEXES, Outbox, OutboxRelay, purge_after_retention
from libs.settings import ServiceSettings

MONGO = web.AppKey("mongo", Mongo)
BUS = web.AppKey("bus", Bus)
OUTBOX = web.AppKey("outbox", Outbox)
RELAY = web.AppKey("relay", OutboxRelay)

log = get_logger("service")
RETENTION_JOB_INTERVAL_S = 3600
Subscriber = Callable[[web.Application, Bus], None]


def create_service_app(settings: ServiceSettings, *, indexes: Iterable[IndexSpec], routes: Iterable[web.AbstractRouteDef],
                       subscribe: Subscriber | None = None, client_max_size: int = 1024 ** 2) -> web.Application:
    """The application of one domain service: its routes, its consumers, and the kit's resources."""
    app = create_base_app(settings, client_max_size=client_max_size, middlewares=[auth_middleware])
    app[VERIFIER] = TokenVerifier(settings)
    app.add_routes(list(routes))
    index_list = [*indexes, *OUTBOX_INDEXES, *IDEMPOTENCY_INDEXES]

    async def resources(app: web.Application):
        mongo = Mongo(settings.mongo_url, settings.mongo_db, settings.mongo_serialize_transactions,
                      app_name=settings.service_name)
        await mongo.start(index_list)
        await beat(mongo)  # alive before the first Idempotency-Key claim names this process
        bus = Bus(settings)
        await bus.connect()
        outbox = Outbox(mongo, settings.service_name)
        relay = OutboxRelay(mongo, bus, outbox, settings.service_name, settings.outbox_poll_interval_s,
                            coalesce_s=settings.outbox_coalesce_ms / 1000)
        app[MONGO], app[BUS], app[OUTBOX], app[RELAY] = mongo, bus, outbox, relay
        add_readiness_check(app, "mongo", mongo.ping)
        add_readiness_check(app, "broker", bus.check)
        await relay.start()
        if subscribe is not None:
            subscribe(app, bus)
        yield
        await bus.stop_consuming()
        await relay.stop()
        await app[VERIFIER].close()
        await bus.close()
        await mongo.close()

    app.cleanup_ctx.append(resources)

    async def start_consuming(app: web.Application) -> None:
        # Startup hooks run after every cleanup context, the service's use cases included: no event reaches
        # a consumer before the use case it calls exists.
        if subscribe is not None:
            await app[BUS].start_consuming(app[MONGO])
        log.info("service.started", port=settings.port)

    async def stop_consuming(app: web.Application) -> None:
        await app[BUS].stop_consuming()

    app.on_startup.append(start_consuming)
    app.on_shutdown.append(stop_consuming)
    add_periodic_job(app, f"{settings.service_name}-heartbeat", HEARTBEAT_S, lambda app: beat(app[MONGO]),
                     every_replica=True)
    add_periodic_job(app, f"{settings.service_name}-bus-retention", RETENTION_JOB_INTERVAL_S,
                     lambda app: purge_after_retention(app[MONGO], settings.service_name, settings.bus_retention_hours))
    return app


_job_period: ContextVar[int | None] = ContextVar("job_period", default=None)


def current_job_period() -> int | None:
    """Inside a periodic job's run: the period it claimed (wall clock // interval). A run may start late, even
    in the next period, so a job whose effect must happen once per period keys it on this, not on the clock."""
    return _job_period.get()


def add_periodic_job(app: web.Application, name: str, interval_s: float,
                     job: Callable[[web.Application], Awaitable[Any]], *, every_replica: bool = False) -> None:
    """Run `job(app)` every `interval_s` seconds while the app runs (sweepers, schedulers).

    By default a job runs once per period across all replicas of the service: each period (the wall clock
    cut into `interval_s` slices) is claimed by one atomic update of `job_periods`, and only the replica that
    claimed it runs. `every_replica=True` is for work each process does for itself (a heartbeat, reloading
    keys into memory) or that competes safely by its own leases (a delivery worker).
    """

    async def claim(mongo: Mongo, period: int) -> bool:
        result = await mongo.read_committed(lambda: mongo.db["job_periods"].update_one(
            {"_id": name, "period": {"$lt": period}}, {"$set": {"period": period, "owner": PROCESS_OWNER}}))
        return result.modified_count == 1

    async def run_once() -> None:
        mongo = app.get(MONGO)
        period = int(time.time() // interval_s)
        if not every_replica and mongo is not None:
            if not await claim(mongo, period):
                metrics.JOB_RUNS.labels(name, "skipped").inc()
                return
        started = time.perf_counter()
        token = _job_period.set(period)
        try:
            await job(app)
        except asyncio.CancelledError:
            raise
        except Exception:
            metrics.JOB_RUNS.labels(name, "failed").inc()
            log.exception("job.failed", job=name)
            return
        finally:
            _job_period.reset(token)
            metrics.JOB_DURATION.labels(name).observe(time.perf_counter() - started)
        metrics.JOB_RUNS.labels(name, "ran").inc()

    async def context(app: web.Application):
        mongo = app.get(MONGO)
        if not every_replica and mongo is not None:
            with contextlib.suppress(DuplicateKeyError):  # another replica created it first
                await mongo.read_committed(lambda: mongo.db["job_periods"].update_one(
                    {"_id": name}, {"$setOnInsert": {"period": -1}}, upsert=True))

        async def loop():
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await run_once()
                except asyncio.CancelledError:
                    raise
                except Exception:  # the claim itself failed (database away): try next period
                    log.exception("job.claim_failed", job=name)

        task = asyncio.create_task(loop(), name=name)
        yield
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    app.cleanup_ctx.append(context)


def run_service(app_factory: Callable[[], web.Application], settings: ServiceSettings) -> None:
    configure_logging(settings.service_name, settings.log_level)
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional
        pass
    web.run_app(app_factory(), host=settings.host, port=settings.port, access_log=None, print=None,
                shutdown_timeout=5)
