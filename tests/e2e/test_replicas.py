"""Two replicas of every domain service and of the gateway (`scripts/suite.py --replicas 2`), on a suite of its
own. The test drives both gateway replicas directly: every call takes the next gateway, and a call that finds its
gateway refusing connections goes to the other (as a client behind DNS round robin would).

1. The closed loop (QR acquisition, pickup order with a coupon, code by message, points, settlement) and the
   flash sale hold: the same tests as on the single suite (test_flows, test_flash_sale), re-run here.
2. Every once-per-period job ran at most once per period across its two replicas while both competed for it:
   over a window in which each replica tried every job at least 6 times, the runs counted by both replicas'
   `o2o_job_runs_total` fit in the window's periods (the jobs run every few seconds here).
3. kill -9 one replica of every service and of the gateway in the middle of a stream of checkouts, without
   restarting them: the survivors carry on, nothing is lost (every paid order has its one capture posting and
   its confirmation message, every reservation is accounted for, outboxes and queues drain, no dead letter).
"""
from __future__ import annotations

import asyncio
import math
import re
import time

import aiohttp
import pytest

from tests.support import eventually
from tests.e2e.client import Api
from tests.e2e.conftest import captured_events, private_suite
from tests.e2e.test_faults import (DOMAIN, assert_consistent, checkout_stream, persist, queue_depths,
                                   settle_leftovers, setup_buyers)
# Re-run on this suite: the same flows, through both gateways (pytest collects imported tests here, with this
# module's `suite` and `api`).
from tests.e2e.test_flash_sale import test_flash_sale_sells_exactly_the_sellable_stock  # noqa: F401
from tests.e2e.test_flows import admin, anonymous, tap, test_acquisition_then_pickup_in_store  # noqa: F401

REPLICAS = 2
JOB_INTERVAL_S = 3
# The jobs that run once per period across replicas (not the `every_replica` ones), by service, with the
# setting that makes each run every JOB_INTERVAL_S here. The kit's hourly bus-retention job is left out:
# it cannot run in a test's few minutes.
ONCE_PER_PERIOD_JOBS = {
    "catalog": {"catalog-price-scheduler": "CATALOG_PRICE_SCHEDULER_INTERVAL_S"},
    "stock": {"stock-reservation-sweeper": "STOCK_SWEEPER_INTERVAL_S",
              "stock-reservation-reconciliation": "STOCK_RECONCILE_INTERVAL_S"},
    "orders": {"orders-sweeper": "ORDERS_SWEEP_INTERVAL_S"},
    "membership": {"membership-dormant": "MEMBERSHIP_DORMANT_JOB_INTERVAL_S",
                   "membership-points-expiry": "MEMBERSHIP_EXPIRY_JOB_INTERVAL_S",
                   "membership-coupon-expiry": "MEMBERSHIP_EXPIRY_JOB_INTERVAL_S",
                   "membership-hold-expiry": "MEMBERSHIP_HOLD_EXPIRY_JOB_INTERVAL_S"},
    "notifications": {"campaign-runner": "NOTIFICATIONS_CAMPAIGN_POLL_INTERVAL_S"},
    "settlement": {"settlement-scheduled-close": "SETTLEMENT_AUTO_CLOSE_INTERVAL_S"},
}
JOB_SETTINGS = {setting: str(JOB_INTERVAL_S) for jobs in ONCE_PER_PERIOD_JOBS.values() for setting in jobs.values()}
JOB_RUNS = re.compile(r'^o2o_job_runs_total\{job="([^"]+)",outcome="([a-z]+)"\} ([0-9.e+]+)$')


@pytest.fixture(scope="module")
def suite():
    started_at = time.time()  # no period before this one can have been claimed by this suite's replicas
    with private_suite("o2o-replicas-", JOB_SETTINGS, replicas=REPLICAS) as suite:
        suite.started_at = started_at  # type: ignore[attr-defined]
        yield suite


@pytest.fixture(scope="module")
def event_log(suite):
    """This suite's events (the session's event log belongs to the single suite)."""
    with captured_events(suite.bus_namespace) as events:
        yield events


@pytest.fixture
def api(suite) -> list[str]:
    return [url + "/api/v1" for url in suite.urls("gateway")]


def test_every_service_and_the_gateway_run_as_two_replicas_on_their_own_ports(suite):
    for service in (*DOMAIN, "gateway"):
        assert len(set(suite.running_urls(service))) == REPLICAS, service


async def job_runs(http: aiohttp.ClientSession, url: str) -> dict[tuple[str, str], float]:
    async with http.get(url + "/metrics") as response:
        text = await response.text()
    return {(m[1], m[2]): float(m[3]) for line in text.splitlines() if (m := JOB_RUNS.match(line))}


async def test_every_scheduled_job_ran_once_per_period_across_the_replicas(suite, http):
    async def scrape() -> dict[tuple[str, str], dict[tuple[str, str], float]]:
        return {(service, url): await job_runs(http, url)
                for service in ONCE_PER_PERIOD_JOBS for url in suite.urls(service)}

    def attempts(counts: dict, job: str) -> float:
        return sum(counts.get((job, outcome), 0) for outcome in ("ran", "skipped", "failed"))

    window_opens = time.time()  # before the first scrape: every run counted after it happened later
    before = await scrape()

    async def every_replica_tried_every_job_again(times: int = 6):
        after = await scrape()
        for (service, url), counts in after.items():
            if any(attempts(counts, job) - attempts(before[service, url], job) < times
                   for job in ONCE_PER_PERIOD_JOBS[service]):
                return None
        return after

    after = await eventually(every_replica_tried_every_job_again, timeout=120)
    window_closes = time.time()  # after the last scrape
    periods = math.floor(window_closes / JOB_INTERVAL_S) - math.floor(window_opens / JOB_INTERVAL_S) + 1
    for service, jobs in ONCE_PER_PERIOD_JOBS.items():
        replicas = [url for owner, url in after if owner == service]
        for job in jobs:
            def grew(outcome: str) -> float:
                return sum(after[service, url].get((job, outcome), 0) - before[service, url].get((job, outcome), 0)
                           for url in replicas)
            ran, skipped = grew("ran") + grew("failed"), grew("skipped")
            # Each replica tried at least 6 periods in the window: were the claim not shared, the two would
            # run about twice as many periods as the window holds.
            assert 1 <= ran <= periods, (job, ran, periods)
            assert skipped >= 1, job  # a replica found the period taken and stood aside


async def test_kill_9_one_replica_of_every_service_mid_stream_loses_nothing(suite, event_log):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        admin, members, start_reserved = await setup_buyers(suite, http, received=60)
        progress: list = []
        total = 36
        victims = (*DOMAIN, "gateway")  # the first replica of each: the URL every caller tries first
        stream = asyncio.create_task(checkout_stream(members, total, progress))
        for n, service in enumerate(victims, start=1):
            await eventually(lambda n=n: len(progress) >= n * total // (len(victims) + 2) or stream.done(),
                             timeout=120)
            await asyncio.to_thread(suite.kill, service)  # SIGKILL, no goodbye, and no restart
        order_ids = await asyncio.wait_for(stream, timeout=300)
        assert all(len(suite.running_urls(service)) == REPLICAS - 1 for service in victims)
        final = await settle_leftovers(members, admin, order_ids)
        await assert_consistent(suite, admin, final, start_reserved)
        confirmed = [order_id for order_id, order in final.items() if order["status"] == "confirmed"]
        await confirmation_messages_sent_once(members, confirmed)

    for order_id in confirmed:  # published by whichever replica's relay held the lease
        assert any(e["subject"] == order_id for e in event_log if e["type"] == "orders.order.confirmed")

    async def queues_drained_by_the_survivors():
        depths = await queue_depths(suite.bus_namespace, "events")
        return depths if all(depth == 0 and consumers == REPLICAS - 1 for depth, consumers in depths.values()) \
            else None
    await eventually(queues_drained_by_the_survivors, timeout=60)
    dlqs = await queue_depths(suite.bus_namespace, "dlq")
    assert all(depth == 0 for depth, _ in dlqs.values()), dlqs


async def confirmation_messages_sent_once(members: list[Api], confirmed: list[str]) -> None:
    """Every paid order's confirmation reached its member, once per channel."""
    async def messages():
        found: dict[str, list[str]] = {order_id: [] for order_id in confirmed}
        for member in members:
            reply = await persist(member, "GET", "/notifications/deliveries?type=orders.order.confirmed&limit=100")
            for delivery in reply.body["items"]:
                for order_id in found:
                    if order_id in (delivery.get("body") or ""):
                        found[order_id].append(delivery["channel"])
        return found if all(found.values()) else None

    found = await eventually(messages, timeout=60)
    assert all(len(channels) == len(set(channels)) for channels in found.values()), found
