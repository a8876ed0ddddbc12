"""Periodic jobs across replicas: two processes of one service on one database, a job every 0.2 s. Each
period is run by exactly one replica (the other skips it), and a job marked every_replica runs in both."""
from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from libs import metrics
from libs.service import MONGO, add_periodic_job, create_service_app, current_job_period
from libs.settings import ServiceSettings
from tests.support import running_app, settings_for

INTERVAL_S = 0.2


class JobTestSettings(ServiceSettings):
    service_name: str = "jobtest"


def replica(settings: ServiceSettings, job_name: str, replica_id: str) -> web.Application:
    app = create_service_app(settings, indexes=[], routes=[])

    async def once_per_period(app: web.Application) -> None:
        # The period this run claimed (on a busy machine a run can start in the next period, so not the clock).
        # A second run of the same period would break the unique _id: the test would see it as a failure.
        period = current_job_period()
        await app[MONGO].read_committed(lambda: app[MONGO].db["ran"].insert_one({"_id": period, "by": replica_id}))

    async def in_every_replica(app: web.Application) -> None:
        await app[MONGO].read_committed(lambda: app[MONGO].db["beats"].update_one(
            {"_id": replica_id}, {"$inc": {"n": 1}}, upsert=True))

    add_periodic_job(app, job_name, INTERVAL_S, once_per_period)
    add_periodic_job(app, f"{job_name}-every", INTERVAL_S, in_every_replica, every_replica=True)
    return app


async def test_a_job_runs_once_per_period_across_two_replicas(mongo_url, bus_namespace):
    prefix = f"jt{uuid.uuid4().hex[:8]}_"
    job = f"jobtest-{uuid.uuid4().hex[:6]}"
    first = settings_for(JobTestSettings, mongo_url, bus_namespace, mongo_db_prefix=prefix)
    second = settings_for(JobTestSettings, mongo_url, bus_namespace, mongo_db_prefix=prefix)
    a, b = replica(first, job, "a"), replica(second, job, "b")
    async with running_app(a, first.port), running_app(b, second.port):
        await asyncio.sleep(INTERVAL_S * 15)  # let a dozen periods pass (the test asserts counts, not times)
        ran = await a[MONGO].db["ran"].find({}).to_list()
        beats = {d["_id"]: d["n"] for d in await a[MONGO].db["beats"].find({}).to_list()}
    assert metrics.JOB_RUNS.labels(job, "failed")._value.get() == 0  # no period ran twice
    assert len(ran) >= 2 and len({d["_id"] for d in ran}) == len(ran)
    assert metrics.JOB_RUNS.labels(job, "ran")._value.get() == len(ran)
    assert metrics.JOB_RUNS.labels(job, "skipped")._value.get() >= 1  # the other replica stood aside
    assert set(beats) == {"a", "b"}  # every_replica: both ran it
