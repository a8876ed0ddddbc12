"""Grafana dashboards of the O2O Loop suite, written as code and rendered to deploy/grafana/dashboards/*.json.

    python deploy/grafana/dashboards.py          # rewrite the JSON files (commit them)
    python deploy/grafana/dashboards.py --check  # exit 1 when a committed file is stale

Grafana loads the JSON files through file provisioning (deploy/grafana/provisioning/). Every PromQL
expression here is syntax-checked by promtool and every o2o_* metric it names must be exported by the
services (tests/unit/deploy/test_grafana.py, tests/integration/deploy/test_metrics_exported.py).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
SERVICES = ("gateway", "catalog", "stock", "orders", "membership", "notifications", "settlement")
RATE = "$__rate_interval"
CNY = "prefix:¥"  # Grafana custom unit; the metrics count fen, panels divide by 100
PROBES = 'route!~"/metrics|/healthz|/readyz"'


class Board:
    """Lays panels out left to right on a 24-column grid, rows of equal height."""

    def __init__(self, uid: str, title: str, description: str, variables: list[dict] | None = None) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.variables = variables or []
        self.panels: list[dict] = []
        self._x = self._y = 0
        self._row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "id": len(self.panels) + 1,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y}, "panels": []})
        self._y += 1

    def _newline(self) -> None:
        if self._x:
            self._y += self._row_height
            self._x, self._row_height = 0, 0

    def _place(self, width: int, height: int) -> dict:
        if self._x + width > 24:
            self._newline()
        pos = {"h": height, "w": width, "x": self._x, "y": self._y}
        self._x += width
        self._row_height = max(self._row_height, height)
        return pos

    def _panel(self, kind: str, title: str, targets: list[tuple[str, str]], unit: str, width: int, height: int,
               description: str, **options) -> None:
        panel = {
            "id": len(self.panels) + 1, "type": kind, "title": title, "description": description,
            "datasource": DATASOURCE, "gridPos": self._place(width, height),
            "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
                         "range": True} for i, (expr, legend) in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": unit, **options.pop("defaults", {})}, "overrides": []},
            "options": options,
        }
        self.panels.append(panel)

    def graph(self, title: str, *targets: tuple[str, str], unit: str = "short", width: int = 12, height: int = 8,
              description: str = "", stack: bool = False) -> None:
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                  "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
        self._panel("timeseries", title, list(targets), unit, width, height, description,
                    defaults={"custom": custom},
                    legend={"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["mean", "max"]},
                    tooltip={"mode": "multi", "sort": "desc"})

    def stat(self, title: str, expr: str, unit: str = "short", width: int = 4, height: int = 4,
             description: str = "", thresholds: list[tuple[float | None, str]] | None = None) -> None:
        steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
        self._panel("stat", title, [(expr, "")], unit, width, height, description,
                    defaults={"thresholds": {"mode": "absolute", "steps": steps}, "color": {"mode": "thresholds"}},
                    reduceOptions={"calcs": ["lastNotNull"], "fields": "", "values": False},
                    colorMode="background", graphMode="area", textMode="auto")

    def render(self) -> dict:
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": ["o2o"],
            "timezone": "utc", "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
            "refresh": "30s", "time": {"from": "now-3h", "to": "now"},
            "templating": {"list": self.variables},
            "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                      "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                      "name": "Annotations & Alerts", "type": "dashboard"}]},
            "links": [{"type": "dashboards", "tags": ["o2o"], "asDropdown": True, "title": "O2O dashboards",
                       "includeVars": False, "keepTime": True}],
            "panels": self.panels,
        }


def query_variable(name: str, label: str, query: str, multi: bool = True) -> dict:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE, "refresh": 2,
            "query": {"query": query, "refId": f"{name}-values"}, "definition": query, "multi": multi,
            "includeAll": multi, "current": {}, "sort": 1, "regex": ""}


RED_THRESHOLDS = [(None, "green"), (0.01, "orange"), (0.05, "red")]


def overview() -> Board:
    b = Board("o2o-overview", "O2O Loop / Overview",
              "Is the suite up and serving? Availability, traffic, errors and the bus at a glance.")
    b.stat("Services up", 'sum(up{job="o2o"})', thresholds=[(None, "red"), (7, "green")],
           description="Scrape targets answering (7 services expected).")
    b.stat("Requests / s", f'sum(rate(o2o_http_requests_total{{{PROBES}}}[{RATE}]))', unit="reqps")
    b.stat("5xx ratio", f'sum(rate(o2o_http_requests_total{{status=~"5..",{PROBES}}}[{RATE}])) / '
           f'sum(rate(o2o_http_requests_total{{{PROBES}}}[{RATE}]))', unit="percentunit", thresholds=RED_THRESHOLDS)
    b.stat("p99 latency", f'histogram_quantile(0.99, sum by (le) (rate(o2o_http_request_duration_seconds_bucket'
           f'{{{PROBES}}}[{RATE}])))', unit="s", thresholds=[(None, "green"), (0.5, "orange"), (1, "red")])
    b.stat("Outbox backlog", "sum(o2o_outbox_backlog)", thresholds=[(None, "green"), (50, "orange"), (500, "red")],
           description="Events recorded but not yet published, all services.")
    b.stat("Dead letters (1h)", 'sum(increase(o2o_bus_events_consumed_total{outcome="dead_lettered"}[1h]))',
           thresholds=[(None, "green"), (1, "red")])
    b.graph("Up by service", ('up{job="o2o"}', "{{service}}"), width=8,
            description="1 = scraped; 0 = down (alert O2OServiceDown).")
    b.graph("Requests / s by service", (f'sum by (service) (rate(o2o_http_requests_total{{{PROBES}}}[{RATE}]))',
                                        "{{service}}"), unit="reqps", width=8)
    b.graph("5xx ratio by service", (f'sum by (service) (rate(o2o_http_requests_total{{status=~"5.."}}[{RATE}])) / '
                                     f'sum by (service) (rate(o2o_http_requests_total[{RATE}]))', "{{service}}"),
            unit="percentunit", width=8)
    b.graph("p95 latency by service", (f'histogram_quantile(0.95, sum by (service, le) (rate('
                                       f'o2o_http_request_duration_seconds_bucket{{{PROBES}}}[{RATE}])))',
                                       "{{service}}"), unit="s", width=8)
    b.graph("Events published / s by service", (f"sum by (service) (rate(o2o_bus_events_published_total[{RATE}]))",
                                                "{{service}}"), unit="ops", width=8)
    b.graph("Broker connection", ("o2o_bus_connected", "{{service}}"), width=8,
            description="1 while the service's AMQP connection is open.")
    b.row("Gateway")
    b.graph("Rate-limited / s by bucket", (f"sum by (bucket) (rate(o2o_gateway_rate_limited_total[{RATE}]))",
                                           "{{bucket}}"), unit="reqps", width=8)
    b.graph("Refused before routing / s", (f"sum by (reason) (rate(o2o_gateway_rejected_total[{RATE}]))", "{{reason}}"),
            (f"sum by (reason) (rate(o2o_gateway_auth_failures_total[{RATE}]))", "auth: {{reason}}"),
            unit="reqps", width=8)
    b.graph("Circuit breakers", ("max by (service) (o2o_gateway_breaker_state)", "{{service}}"), width=8,
            description="0 closed, 1 half-open, 2 open (upstream shed).")
    b.graph("Upstream p95 by service", (f'histogram_quantile(0.95, sum by (service, le) (rate('
                                        f'o2o_gateway_upstream_duration_seconds_bucket[{RATE}])))', "{{service}}"),
            unit="s", width=12)
    b.graph("Upstream in flight", ("sum by (service) (o2o_gateway_upstream_in_flight)", "{{service}}"), width=12)
    b.graph("Shed by open breakers / s", (f"sum by (service) (rate(o2o_gateway_breaker_refused_total[{RATE}]))",
                                          "{{service}}"), unit="reqps", width=8)
    b.graph("Breaker transitions / h", (f"sum by (service, to) (rate(o2o_gateway_breaker_transitions_total[{RATE}]))"
                                        f" * 3600", "{{service}} → {{to}}"), width=8)
    b.graph("OpenAPI sources merged", ("max by (service) (o2o_gateway_openapi_sources)", "{{service}}"), width=8,
            description="1 = the service's OpenAPI document was part of the last aggregated /api/v1 spec.")
    b.row("Authentication")
    b.graph("Tokens issued / min by kind", (f"sum by (kind) (rate(o2o_membership_tokens_issued_total[{RATE}])) * 60",
                                            "{{kind}}"), width=8)
    b.graph("Refused logins / min", (f"sum by (kind, reason) (rate(o2o_membership_login_failures_total[{RATE}])) * 60",
                                     "{{kind}} {{reason}}"), width=8, description="A burst is brute force: see the "
                                                                              "gateway's sensitive rate limits.")
    b.graph("OTP requests / min by outcome", (f"sum by (outcome) (rate(o2o_membership_otp_requests_total[{RATE}])) * 60",
                                              "{{outcome}}"), width=8)
    return b


def service_red() -> Board:
    sel = 'service=~"$service"'
    b = Board("o2o-service-red", "O2O Loop / Service RED",
              "Rate, errors and duration per route of the chosen services.",
              [query_variable("service", "Service", 'label_values(o2o_http_requests_total, service)')])
    b.graph("Requests / s by route", (f'sum by (service, method, route) (rate(o2o_http_requests_total{{{sel},{PROBES}}}'
                                      f'[{RATE}]))', "{{service}} {{method}} {{route}}"), unit="reqps")
    b.graph("Errors / s by route and status", (f'sum by (service, method, route, status) (rate(o2o_http_requests_total'
                                               f'{{{sel},status=~"4..|5.."}}[{RATE}]))',
                                               "{{service}} {{method}} {{route}} {{status}}"), unit="reqps")
    for quantile in ("0.5", "0.95", "0.99"):
        b.graph(f"p{quantile[2:].ljust(2, '0')} latency by route",
                (f'histogram_quantile({quantile}, sum by (service, method, route, le) (rate('
                 f'o2o_http_request_duration_seconds_bucket{{{sel},{PROBES}}}[{RATE}])))',
                 "{{service}} {{method}} {{route}}"), unit="s", width=8)
    b.graph("5xx ratio", (f'sum by (service) (rate(o2o_http_requests_total{{{sel},status=~"5.."}}[{RATE}])) / '
                          f'sum by (service) (rate(o2o_http_requests_total{{{sel}}}[{RATE}]))', "{{service}}"),
            unit="percentunit", width=8)
    b.graph("In-flight requests", (f"sum by (service) (o2o_http_requests_in_flight{{{sel}}})", "{{service}}"), width=8)
    b.graph("Status classes / s", (f'sum by (service, status) (rate(o2o_http_requests_total{{{sel}}}[{RATE}]))',
                                   "{{service}} {{status}}"), unit="reqps", width=8, stack=True)
    return b


def bus_health() -> Board:
    sel = 'service=~"$service"'
    b = Board("o2o-bus", "O2O Loop / Bus health",
              "Outbox relays, consumers (processed, duplicate, retried, dead-lettered) and RabbitMQ queues.",
              [query_variable("service", "Service", "label_values(o2o_bus_connected, service)")])
    b.row("Publishing (outbox)")
    b.graph("Outbox backlog", (f"sum by (service) (o2o_outbox_backlog{{{sel}}})", "{{service}}"), width=8,
            description="Recorded, not yet published. Growing = relay behind (alert O2OOutboxBacklogGrowing).")
    b.graph("Publish lag p95", (f"histogram_quantile(0.95, sum by (service, le) (rate("
                                f"o2o_outbox_publish_lag_seconds_bucket{{{sel}}}[{RATE}])))", "{{service}}"),
            unit="s", width=8, description="From the state change's commit to the broker's confirm.")
    b.graph("Publish failures / s", (f"sum by (service) (rate(o2o_bus_publish_failures_total{{{sel}}}[{RATE}]))",
                                     "{{service}}"), unit="ops", width=8)
    b.graph("Published / s by event type", (f"sum by (event_type) (rate(o2o_bus_events_published_total{{{sel}}}"
                                            f"[{RATE}]))", "{{event_type}}"), unit="ops", width=24, stack=True)
    b.row("Consuming")
    b.graph("Consumed / s by outcome", (f"sum by (service, outcome) (rate(o2o_bus_events_consumed_total{{{sel}}}"
                                        f"[{RATE}]))", "{{service}} {{outcome}}"), unit="ops", width=12, stack=True)
    b.graph("Retried and dead-lettered / s", (f'sum by (service, event_type, outcome) (rate(o2o_bus_events_consumed_total'
                                              f'{{{sel},outcome=~"retried|dead_lettered"}}[{RATE}]))',
                                              "{{service}} {{event_type}} {{outcome}}"), unit="ops", width=12)
    b.graph("Handler p95 by event type", (f"histogram_quantile(0.95, sum by (service, event_type, le) (rate("
                                          f"o2o_bus_handler_duration_seconds_bucket{{{sel}}}[{RATE}])))",
                                          "{{service}} {{event_type}}"), unit="s", width=12)
    b.graph("Broker connection", (f"o2o_bus_connected{{{sel}}}", "{{service}} {{instance}}"), width=12)
    b.graph("Consumer batch size p50 / p95", (f"histogram_quantile(0.5, sum by (service, le) (rate("
                                              f"o2o_bus_consumer_batch_size_bucket{{{sel}}}[{RATE}])))", "{{service}} p50"),
            (f"histogram_quantile(0.95, sum by (service, le) (rate(o2o_bus_consumer_batch_size_bucket{{{sel}}}"
             f"[{RATE}])))", "{{service}} p95"), width=12,
            description="Events handled in one unit of work. Near 1 under load means the consumer is not batching.")
    b.graph("Retention purged / h", (f"sum by (service, store) (increase(o2o_bus_retention_purged_total{{{sel}}}[1h]))",
                                     "{{service}} {{store}}"), width=12,
            description="Sent outbox events and inbox ids deleted after the retention window (O2O_BUS_RETENTION_HOURS).")
    b.row("RabbitMQ (rabbitmq_prometheus plugin)")
    b.graph("Ready messages by service queue", ('sum by (queue) (rabbitmq_detailed_queue_messages_ready'
                                                '{queue=~".*\\\\.events"})', "{{queue}}"), width=8,
            description="Consumer lag: events waiting in <service>.events.")
    b.graph("Dead-letter queues", ('sum by (queue) (rabbitmq_detailed_queue_messages{queue=~".*\\\\.dlq"})', "{{queue}}"),
            width=8, description="Anything here needs a person (alert O2ODeadLetterQueueNotEmpty).")
    b.graph("Consumers by queue", ('sum by (queue) (rabbitmq_detailed_queue_consumers{queue=~".*\\\\.events"})',
                                   "{{queue}}"), width=8)
    b.graph("Retry queues", ('sum by (queue) (rabbitmq_detailed_queue_messages{queue=~".*\\\\.retry"})', "{{queue}}"),
            width=12)
    b.graph("Audit queue depth", ('sum by (queue) (rabbitmq_detailed_queue_messages{queue=~".*o2o\\\\.events\\\\.audit"})',
                                  "{{queue}}"), width=12, description="Bounded (drop-head) copy of every event.")
    return b


def business() -> Board:
    b = Board("o2o-business", "O2O Loop / Business KPIs",
              "Orders, GMV, stock reservations, pickups, members, points and coupons, notifications and settlement.")
    hour = "[1h]"
    b.row("Orders")
    b.stat("Orders placed (1h)", f"sum(increase(o2o_orders_placed_total{hour}))")
    b.stat("Orders paid (1h)", f"sum(increase(o2o_orders_paid_total{hour}))")
    b.stat("GMV placed (1h, CNY)", f"sum(increase(o2o_orders_order_value_fen_sum{hour})) / 100", unit=CNY,
           description="Order totals at placement; the metric counts fen.")
    b.stat("Average order (CNY)", f"sum(increase(o2o_orders_order_value_fen_sum{hour})) / "
           f"sum(increase(o2o_orders_order_value_fen_count{hour})) / 100", unit=CNY)
    b.stat("Checkouts rejected (1h)", f"sum(increase(o2o_orders_checkouts_rejected_total{hour}))",
           thresholds=[(None, "green"), (10, "orange")])
    b.stat("Refunded (1h, CNY)", f"sum(increase(o2o_orders_refunded_fen_total{hour})) / 100", unit=CNY)
    b.graph("Orders placed / min by channel and fulfilment",
            (f"sum by (channel, fulfilment) (rate(o2o_orders_placed_total[{RATE}])) * 60", "{{channel}} {{fulfilment}}"),
            unit="short", stack=True)
    b.graph("GMV / min by channel (CNY)", (f"sum by (channel) (rate(o2o_orders_order_value_fen_sum[{RATE}])) * 60 / 100",
                                           "{{channel}}"), unit=CNY, stack=True)
    b.graph("Order status changes / min", (f"sum by (fulfilment, status) (rate(o2o_orders_transitions_total[{RATE}])) "
                                           f"* 60", "{{fulfilment}} → {{status}}"), width=8)
    b.graph("Cancellations / min by cause", (f"sum by (cause) (rate(o2o_orders_cancelled_total[{RATE}])) * 60",
                                             "{{cause}}"), width=8)
    b.graph("Checkouts rejected / min by reason", (f"sum by (reason) (rate(o2o_orders_checkouts_rejected_total[{RATE}]))"
                                                   f" * 60", "{{reason}}"), width=8)
    b.graph("Payments / min by outcome", (f"sum by (provider, outcome) (rate(o2o_orders_payments_total[{RATE}])) * 60",
                                          "{{provider}} {{outcome}}"), width=8)
    b.graph("Checkout p95 by outcome", (f"histogram_quantile(0.95, sum by (outcome, le) (rate("
                                        f"o2o_orders_checkout_duration_seconds_bucket[{RATE}])))", "{{outcome}}"),
            unit="s", width=8)
    b.graph("Returns / min", (f"sum by (stage) (rate(o2o_orders_returns_total[{RATE}])) * 60", "{{stage}}"), width=8)
    b.graph("Saga follow-ups / min by outcome", (f"sum by (action, outcome) (rate(o2o_orders_saga_actions_total[{RATE}]))"
                                                 f" * 60", "{{action}} {{outcome}}"), width=8,
            description="Commit/release/refund calls to other services; failed ones are retried by the sweeper.")
    b.graph("Orders with pending follow-ups", ("max(o2o_orders_with_pending_actions)", "pending"), width=8,
            description="Stuck above 0 = another service keeps refusing (alert O2OOrdersFollowUpsStuck).")
    b.graph("Sold-out shortcuts and lost paid reservations / h",
            (f"sum(rate(o2o_orders_sold_out_shortcuts_total[{RATE}])) * 3600", "sold-out shortcut"),
            (f"sum(rate(o2o_orders_paid_reservations_lost_total[{RATE}])) * 3600", "paid reservation lost"), width=8)
    b.row("Stock and pickup")
    b.graph("Reservations / min by outcome", (f"sum by (mode, outcome) (rate(o2o_stock_reservations_total[{RATE}])) * 60",
                                              "{{mode}} {{outcome}}"), width=8)
    b.graph("Rejected share by mode", (f'sum by (mode) (rate(o2o_stock_reservations_total{{outcome="rejected"}}[{RATE}]))'
                                       f' / sum by (mode) (rate(o2o_stock_reservations_total{{outcome=~"reserved|rejected"}}'
                                       f'[{RATE}]))', "{{mode}}"), unit="percentunit", width=8,
            description="Sold-out answers (alert O2OReservationRejectionsSpike).")
    b.graph("Releases / min by reason", (f"sum by (reason) (rate(o2o_stock_releases_total[{RATE}])) * 60", "{{reason}}"),
            width=8, description="Expired = unpaid or uncollected orders gave their stock back.")
    b.graph("Units reserved / min", (f"sum by (mode) (rate(o2o_stock_reserved_units_total[{RATE}])) * 60", "{{mode}}"),
            width=8)
    b.graph("Locations per reservation (p95)", (f"histogram_quantile(0.95, sum by (mode, le) (rate("
                                                f"o2o_stock_routing_locations_bucket[{RATE}])))", "{{mode}}"), width=8,
            description="Split shipments: fewer is better.")
    b.graph("Pickup code checks / min", (f"sum by (outcome) (rate(o2o_orders_pickup_verifications_total[{RATE}])) * 60",
                                         "{{outcome}}"), width=8)
    b.graph("Ready-for-pickup to handover (p50 / p90)",
            (f"histogram_quantile(0.5, sum by (le) (rate(o2o_orders_pickup_wait_seconds_bucket[1h]))) / 60", "p50 min"),
            (f"histogram_quantile(0.9, sum by (le) (rate(o2o_orders_pickup_wait_seconds_bucket[1h]))) / 60", "p90 min"),
            width=8, description="How long members take to collect once the store has their order ready.")
    b.graph("Commits / min (goods left)", (f"sum(rate(o2o_stock_commits_total[{RATE}])) * 60", "commits"), width=8)
    b.graph("Stock movements / h by kind", (f"sum by (kind) (rate(o2o_stock_movements_total[{RATE}])) * 3600", "{{kind}}"),
            width=8, description="Receipts, adjustments, counts, transfers, returns to stock.")
    b.graph("Levels under reorder point / h", (f"sum(rate(o2o_stock_level_low_total[{RATE}])) * 3600", "level low"),
            width=8)
    b.graph("Reserve p95 by mode", (f"histogram_quantile(0.95, sum by (mode, le) (rate("
                                    f"o2o_stock_reserve_duration_seconds_bucket[{RATE}])))", "{{mode}}"), unit="s",
            width=24)
    b.graph("Reservations / min by path", (f"sum by (path) (rate(o2o_stock_reserve_path_total[{RATE}])) * 60",
                                           "{{path}}"), width=12,
            description="fast = one guarded $inc on the level, no transaction; memo = sold out refused from memory; "
                        "transactional = splits and requests inside an Idempotency-Key unit of work.")
    b.graph("Reservation drift repaired",
            (f"sum by (kind) (increase(o2o_stock_reservation_drift_total[{RATE}]))", "repaired {{kind}}"),
            ("max(o2o_stock_reservation_drift_levels)", "levels out of line (last run)"), width=12,
            description="The reconciliation job proves reserved = open reservations per level (alert "
                        "StockReservationDrift).")
    b.row("Members, points and coupons")
    b.graph("Members registered / h by source", (f"sum by (source) (rate(o2o_membership_members_registered_total"
                                                 f"[{RATE}])) * 3600", "{{source}}"), width=8)
    b.graph("QR scans / h", (f"sum by (qr_kind, outcome) (rate(o2o_membership_qr_scans_total[{RATE}])) * 3600",
                             "{{qr_kind}} {{outcome}}"), width=8)
    b.graph("Points moved / h by reason", (f"sum by (reason) (rate(o2o_membership_points_total[{RATE}])) * 3600",
                                           "{{reason}}"), width=8, description="Issued (earn) and redeemed (spend).")
    b.graph("Coupons / h by transition", (f"sum by (transition) (rate(o2o_membership_coupons_total[{RATE}])) * 3600",
                                          "{{transition}}"), width=8, description="issued, locked, redeemed, released.")
    b.graph("Checkout holds / min", (f"sum by (outcome) (rate(o2o_membership_checkout_holds_total[{RATE}])) * 60",
                                     "{{outcome}}"), width=8)
    b.graph("Tier changes / h", (f"sum by (to_tier) (rate(o2o_membership_tier_changes_total[{RATE}])) * 3600",
                                 "{{to_tier}}"), width=8)
    b.graph("Discount per checkout p50 / p95 (CNY)",
            (f"histogram_quantile(0.5, sum by (le) (rate(o2o_membership_checkout_discount_fen_bucket[{RATE}]))) / 100",
             "p50"),
            (f"histogram_quantile(0.95, sum by (le) (rate(o2o_membership_checkout_discount_fen_bucket[{RATE}]))) / 100",
             "p95"), unit=CNY, width=12)
    b.graph("Members merged and gone dormant / day",
            ("sum(increase(o2o_membership_members_merged_total[1d]))", "merged"),
            ("sum(increase(o2o_membership_members_dormant_total[1d]))", "dormant"), width=12)
    b.row("Notifications")
    b.graph("Send attempts / min by channel and outcome",
            (f"sum by (channel, outcome) (rate(o2o_notifications_delivery_attempts_total[{RATE}])) * 60",
             "{{channel}} {{outcome}}"), width=8)
    b.graph("Failed for good / h by channel", (f"sum by (channel) (rate(o2o_notifications_deliveries_failed_total"
                                               f"[{RATE}])) * 3600", "{{channel}}"), width=8)
    b.graph("Delivery latency p95 by channel", (f"histogram_quantile(0.95, sum by (channel, le) (rate("
                                                f"o2o_notifications_delivery_latency_seconds_bucket[{RATE}])))",
                                                "{{channel}}"), unit="s", width=8)
    b.graph("Suppressed / h by reason", (f"sum by (reason) (rate(o2o_notifications_messages_suppressed_total[{RATE}]))"
                                         f" * 3600", "{{reason}}"), width=12)
    b.graph("Due backlog", ("sum(o2o_notifications_due_backlog)", "due"), width=12)
    b.graph("Deliveries created / h by channel and status",
            (f"sum by (channel, status) (rate(o2o_notifications_deliveries_created_total[{RATE}])) * 3600",
             "{{channel}} {{status}}"), width=8)
    b.graph("Send p95 by channel", (f"histogram_quantile(0.95, sum by (channel, le) (rate("
                                    f"o2o_notifications_send_duration_seconds_bucket[{RATE}])))", "{{channel}}"),
            unit="s", width=8)
    b.graph("Campaign members / h", (f"sum by (outcome) (rate(o2o_notifications_campaign_members_total[{RATE}])) * 3600",
                                     "{{outcome}}"), width=8)
    b.row("Settlement")
    b.stat("Postings (1h)", f'sum(increase(o2o_settlement_postings_total{{outcome="posted"}}{hour}))', width=6)
    b.stat("Shares credited (1h, CNY)", f'sum(increase(o2o_settlement_sale_share_fen_total{{direction="credit"}}{hour}))'
           f" / 100", unit=CNY, width=6)
    b.stat("Reversed by refunds (1h, CNY)", f"sum(increase(o2o_settlement_reversed_fen_total{hour})) / 100",
           unit=CNY, width=6)
    b.stat("Reconciliation discrepancies (24h)", "sum(increase(o2o_settlement_reconciliation_discrepancies_total[24h]))",
           width=6, thresholds=[(None, "green"), (1, "red")])
    b.graph("Postings / min by kind", (f"sum by (kind, outcome) (rate(o2o_settlement_postings_total[{RATE}])) * 60",
                                       "{{kind}} {{outcome}}"), width=8)
    b.graph("Shares credited / h by party (CNY)", (f'sum by (party_kind) (rate(o2o_settlement_sale_share_fen_total'
                                                   f'{{direction="credit"}}[{RATE}])) * 3600 / 100', "{{party_kind}}"),
            unit=CNY, width=8, stack=True,
            description="HQ, channel, fulfilling store, franchisee and shop assistant shares of every sale.")
    b.graph("Refund anomalies / h by kind", (f"sum by (kind) (rate(o2o_settlement_refund_anomalies_total[{RATE}])) "
                                             f"* 3600", "{{kind}}"), width=8)
    b.graph("Statements closed / day", (f"sum by (granularity) (increase(o2o_settlement_statements_closed_total[1d]))",
                                        "{{granularity}}"), width=8)
    b.graph("Payout batches by status / day", ("sum by (status) (increase(o2o_settlement_payout_batches_total[1d]))",
                                               "{{status}}"), width=8)
    b.graph("Reconciliations / day by outcome", ("sum by (outcome) (increase(o2o_settlement_reconciliations_total[1d]))",
                                                 "{{outcome}}"), width=8)
    b.graph("Refund postings / h by stage", (f"sum by (stage) (rate(o2o_settlement_refunds_total[{RATE}])) * 3600",
                                             "{{stage}}"), width=8)
    b.graph("Paid out / day by party (CNY)", ("sum by (party_kind) (increase(o2o_settlement_payout_fen_total[1d])) / 100",
                                              "{{party_kind}}"), unit=CNY, width=8)
    b.graph("Settled order net p50 (CNY)", (f"histogram_quantile(0.5, sum by (le) (rate("
                                            f"o2o_settlement_order_net_fen_bucket[{RATE}]))) / 100", "p50"),
            unit=CNY, width=8)
    b.row("Catalog")
    b.graph("Barcode / QR lookups / min", (f"sum by (outcome) (rate(o2o_catalog_code_lookups_total[{RATE}])) * 60",
                                           "{{outcome}}"), width=8, description="Scan-in-store lookups.")
    b.graph("Price quotes / min", (f"sum by (outcome) (rate(o2o_catalog_quotes_total[{RATE}])) * 60", "{{outcome}}"),
            width=8)
    b.graph("Products published / day", ("sum(increase(o2o_catalog_products_published_total[1d]))", "published"),
            width=8)
    b.graph("Price changes / day", ("sum by (how) (increase(o2o_catalog_price_changes_total[1d]))", "{{how}}"),
            ("sum by (reason) (increase(o2o_catalog_price_rejections_total[1d]))", "refused: {{reason}}"), width=8)
    return b


BOARDS = {"overview.json": overview, "service-red.json": service_red, "bus-health.json": bus_health,
          "business.json": business}


def render_all() -> dict[str, str]:
    return {name: json.dumps(make().render(), indent=2, ensure_ascii=False) + "\n" for name, make in BOARDS.items()}


def main(argv: list[str]) -> int:
    rendered = render_all()
    if "--check" in argv:
        stale = [n for n, text in rendered.items() if not (OUT / n).exists() or (OUT / n).read_text() != text]
        if stale:
            print(f"stale dashboards: {stale}; run `python deploy/grafana/dashboards.py`", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(exist_ok=True)
    for name, text in rendered.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(rendered)} dashboards to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# -- what the dashboards and alert rules query (used by the tests) -------------------------------------------
RULES_DIR = Path(__file__).resolve().parents[1] / "prometheus" / "rules"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$service": ".*"}


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard target and query variable, with Grafana variables substituted."""
    found = []
    for name in sorted(BOARDS):
        board = json.loads((OUT / name).read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{name}: {panel['title']}", target["expr"]))
        for variable in board["templating"]["list"]:
            inner = variable["query"]["query"]
            found.append((f"{name}: ${variable['name']}", inner[len("label_values("):-1].rsplit(",", 1)[0]))
    return [(where, _substitute(expr)) for where, expr in found]


def rule_queries() -> list[tuple[str, str]]:
    import yaml
    found = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                found.append((f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"]))
    return found


def _substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def used_o2o_metrics() -> dict[str, set[str]]:
    """o2o_* metric name (as written in a query) -> where it is used."""
    import re
    used: dict[str, set[str]] = {}
    for where, expr in dashboard_queries() + rule_queries():
        for name in re.findall(r"\b(o2o_[a-z0-9_]+)\b", expr):
            used.setdefault(name, set()).add(where)
    return used


def metric_families(name: str) -> set[str]:
    """Family names a sample name may belong to (histogram/summary series carry a suffix)."""
    families = {name}
    for suffix in ("_bucket", "_sum", "_count", "_created"):
        if name.endswith(suffix):
            families.add(name[: -len(suffix)])
    return families
