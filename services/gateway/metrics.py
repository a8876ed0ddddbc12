"""What the gateway does, for Prometheus. Every label is bounded: services and limit classes come from fixed
sets, rejection reasons and auth outcomes are constants in this module's callers (never raw paths or ids)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RATE_LIMITED = Counter("o2o_gateway_rate_limited_total", "Requests refused with 429, by bucket",
                       ["bucket"])  # ip | principal | login_ip | login_target | login_pair | otp_send | pickup_order | pickup_store | order_member | order_in_flight
REJECTED = Counter("o2o_gateway_rejected_total", "Requests refused before routing, by reason",
                   ["reason"])  # body_too_large | url_too_long | headers_too_large | internal_route | bad_path | no_route | cors_origin
AUTH_FAILURES = Counter("o2o_gateway_auth_failures_total", "Requests refused by authentication/authorization",
                        ["reason"])  # the problem type: invalid-token | token-expired | unauthorized | forbidden | auth-unavailable | service-token
BREAKER_STATE = Gauge("o2o_gateway_breaker_state", "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open",
                      ["service"])
BREAKER_TRANSITIONS = Counter("o2o_gateway_breaker_transitions_total", "Circuit breaker state changes",
                              ["service", "to"])
BREAKER_REFUSED = Counter("o2o_gateway_breaker_refused_total", "Requests answered 503 because a breaker is open",
                          ["service"])
UPSTREAM_LATENCY = Histogram("o2o_gateway_upstream_duration_seconds",
                             "Time until an upstream's response headers arrive, by service and outcome",
                             ["service", "outcome"],  # outcome: ok | client_error | server_error | timeout | unreachable
                             buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
UPSTREAM_IN_FLIGHT = Gauge("o2o_gateway_upstream_in_flight", "Requests being proxied, by service", ["service"])
DOCS_SOURCES = Gauge("o2o_gateway_openapi_sources", "Services whose OpenAPI document was merged at the last "
                     "assembly (1) or missing (0)", ["service"])
UPSTREAM_RETRIES = Counter("o2o_gateway_upstream_retries_total", "Calls sent again to another replica of the "
                           "service, by why the first replica failed", ["service", "reason"])  # refused | broken
REPLICA_UP = Gauge("o2o_gateway_upstream_replica_up", "Replica of an upstream service found ready by the last "
                   "probe or call (1) or marked down (0)", ["service", "replica"])  # replica: its base URL (config)
REVOCATION_POLLS = Counter("o2o_gateway_revocation_polls_total", "Polls of membership's revoked sessions, by outcome",
                           ["outcome"])  # ok | failed
REVOCATIONS = Gauge("o2o_gateway_revocations", "Revoked sessions and accounts the gateway currently refuses")
