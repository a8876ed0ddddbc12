"""Business metrics of notifications. Labels are bounded: channels, categories, statuses, outcomes, reasons."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from libs.mongo import Mongo

DELIVERIES_CREATED = Counter("o2o_notifications_deliveries_created_total",
                             "Deliveries created from events and campaigns", ["channel", "category", "status"])
SUPPRESSED = Counter("o2o_notifications_messages_suppressed_total",
                     "Messages not sent because of preferences, consent, caps or missing contact",
                     ["category", "reason"])
ATTEMPTS = Counter("o2o_notifications_delivery_attempts_total", "Send attempts by outcome",
                   ["channel", "outcome"])  # outcome: sent | transient_error | permanent_error
SEND_LATENCY = Histogram("o2o_notifications_send_duration_seconds", "Time a channel takes to accept a message",
                         ["channel"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DELIVERY_LATENCY = Histogram("o2o_notifications_delivery_latency_seconds",
                             "From delivery creation to its successful send", ["channel"],
                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))
DELIVERIES_FAILED = Counter("o2o_notifications_deliveries_failed_total", "Deliveries failed for good",
                            ["channel", "category"])
DUE_BACKLOG = Gauge("o2o_notifications_due_backlog", "Deliveries due and picked up by the last worker run")
CAMPAIGN_MEMBERS = Counter("o2o_notifications_campaign_members_total", "Campaign members processed",
                           ["outcome"])  # outcome: queued | suppressed


def count_on_commit(counter: Counter, *labels: str) -> None:
    """Count once the surrounding transaction commits: a unit of work may be retried or roll back."""
    Mongo.after_commit(lambda: counter.labels(*labels).inc())
