"""Prometheus metrics of the plumbing (HTTP, bus, outbox). Services add their own business metrics.

Labels are bounded: routes are the route templates (never raw paths), event types come from a fixed set.
"""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

HTTP_REQUESTS = Counter("o2o_http_requests_total", "HTTP requests served", ["service", "method", "route", "status"])
HTTP_LATENCY = Histogram("o2o_http_request_duration_seconds", "HTTP request latency", ["service", "method", "route"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
HTTP_IN_FLIGHT = Gauge("o2o_http_requests_in_flight", "HTTP requests being served", ["service"])

EVENTS_CONSUMED = Counter("o2o_bus_events_consumed_total", "Events handled by a consumer, by outcome",
                          ["service", "event_type", "outcome"])  # outcome: processed|duplicate|retried|dead_lettered
CONSUMER_LATENCY = Histogram("o2o_bus_handler_duration_seconds", "Consumer handler latency",
                             ["service", "event_type"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
EVENTS_PUBLISHED = Counter("o2o_bus_events_published_total", "Events published by the outbox relay",
                           ["service", "event_type"])
PUBLISH_FAILURES = Counter("o2o_bus_publish_failures_total", "Failed publish attempts", ["service"])
OUTBOX_BACKLOG = Gauge("o2o_outbox_backlog", "Outbox events not yet published", ["service"])
OUTBOX_LAG = Histogram("o2o_outbox_publish_lag_seconds", "Time from recording to publishing an event", ["service"],
                       buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
CONSUMER_BATCH_SIZE = Histogram("o2o_bus_consumer_batch_size", "Events handled together in one unit of work",
                                ["service"], buckets=(1, 2, 5, 10, 25, 50, 100, 200))
RETENTION_PURGED = Counter("o2o_bus_retention_purged_total", "Sent outbox events and inbox ids purged after the "
                           "retention window", ["service", "store"])  # store: outbox|inbox
JOB_RUNS = Counter("o2o_job_runs_total", "Periodic job periods, by outcome (ran once across replicas, skipped "
                   "because another replica ran that period, failed)", ["job", "outcome"])
JOB_DURATION = Histogram("o2o_job_duration_seconds", "How long one run of a periodic job took", ["job"],
                         buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))
BUS_CONNECTED = Gauge("o2o_bus_connected", "1 while the broker connection is open", ["service"])


def render_latest() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST
