from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.replicas import split_urls
from libs.settings import ServiceSettings, secret


class GatewaySettings(ServiceSettings):
    """Gateway settings (env prefix GATEWAY_). Rates are tokens per second; bursts are bucket capacities."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    service_name: str = "gateway"
    # its credential at membership (GATEWAY_CLIENT_SECRET): the gateway asks for revoked sessions
    client_secret: str = secret()
    port: int = 8080
    # Prometheus (/metrics) and the detailed health of every service (/healthz with readiness checks, errors
    # and breaker states) are served on this internal port only, never on the public `port`; 0: not at all.
    metrics_port: int = 9080

    # Upstream calls: the default timeout; the route policy table overrides it per route.
    upstream_timeout_s: float = 10.0
    upstream_connect_timeout_s: float = 2.0
    pool_size: int = 200
    # Replicas: a service's URL setting may list several, comma-separated. Calls go round-robin to the replicas
    # that are up; one that refuses a connection, or fails the /readyz probe run every `upstream_probe_interval_s`
    # (0: no probe), is skipped for `upstream_down_s` seconds.
    upstream_down_s: float = 5.0
    upstream_probe_interval_s: float = 2.0

    # Verified tokens are remembered this long (never past their exp), so a burst costs one RSA check.
    token_cache_s: float = 30.0
    token_cache_entries: int = 10_000

    # Request limits, answered as problem+json before anything reaches a service.
    max_body_bytes: int = Field(1024 * 1024, description="a larger body is answered 413")
    max_url_bytes: int = Field(4096, description="a longer URL is answered 414")
    max_header_bytes: int = Field(16 * 1024, description="larger headers are answered 431")

    # Token buckets. Per client address before authentication (a coarse flood guard: IPv6 by /64), per
    # principal after it.
    rate_ip_per_s: float = 100.0
    rate_ip_burst: int = 200
    rate_principal_per_s: float = 50.0
    rate_principal_burst: int = 100
    # Login and one-time-code routes (see limits.py). Per address only a coarse guard: a store's Wi-Fi or a
    # carrier NAT is hundreds of shoppers behind one address.
    rate_login_ip_per_s: float = 5.0
    rate_login_ip_burst: int = 300
    # Per target (the phone whose code is guessed, the username whose password is): from any address.
    # Refilled quickly, so a stranger spending it shuts the owner out for a minute, not for hours.
    rate_login_target_per_s: float = 1 / 60
    rate_login_target_burst: int = 10
    # Per requester (address) and target together: one device's retries.
    rate_login_pair_per_s: float = 1 / 60
    rate_login_pair_burst: int = 5
    # Codes sent to one phone (text messages cost money and bother the owner), from any address.
    rate_otp_send_per_s: float = 1 / 120
    rate_otp_send_burst: int = 3
    # Pickup codes: a few tries per order; a generous budget per store counter (a busy counter hands over
    # dozens of orders an hour, and bounds how many codes a rogue device can try across orders).
    rate_pickup_order_per_s: float = 5 / 3600
    rate_pickup_order_burst: int = 5
    rate_pickup_store_per_s: float = 200 / 3600
    rate_pickup_store_burst: int = 100
    # POST /orders per member (flash sale: one person, one place in the queue): at most
    # `order_in_flight_per_member` order requests at once, and a slow bucket on top.
    rate_order_per_s: float = 1.0
    rate_order_burst: int = 3
    order_in_flight_per_member: int = 1
    rate_limit_max_keys: int = 200_000
    # The client address is the TCP peer, unless the peer is inside one of these ranges (CIDR, JSON list, e.g.
    # ["10.0.0.0/8"]): then X-Forwarded-For is read from the right past every trusted hop. Empty: never.
    trusted_proxies: list[str] = Field(default_factory=list)

    # Circuit breaker per upstream service (over all its replicas): opens after this many consecutive failed
    # calls (every replica tried refused, a timeout, a 502/503/504 answer) and stays open for `breaker_open_s` before one trial request is let through.
    breaker_failure_threshold: int = 5
    breaker_open_s: float = 10.0

    # CORS: browser origins allowed to call the API (exact match, e.g. "https://app.o2o.example").
    cors_origins: list[str] = Field(default_factory=list)
    cors_max_age_s: int = 600

    # Garbage collector, tuned once the app has started: `gc_freeze` moves everything built at start-up into
    # the permanent generation (never scanned again); `gc_gen0_threshold` (0 keeps Python's 700) makes young
    # collections rarer, since a request's garbage is mostly freed by reference counting.
    gc_freeze: bool = True
    gc_gen0_threshold: int = 50_000

    # Ended sessions and revoked accounts (logout, password change or reset, disabled staff, new roles) are polled
    # from membership this often; tokens they name are refused (401 token-revoked). 0: not polled.
    revocation_poll_s: float = 5.0

    # Aggregated OpenAPI: how long the assembled document is reused, and how long a service may take.
    docs_cache_s: float = 30.0
    docs_fetch_timeout_s: float = 3.0

    def upstreams(self) -> dict[str, list[str]]:
        """Each service's replica base URLs (one for a service that runs once)."""
        return {name: split_urls(urls) for name, urls in self.service_urls().items()}
