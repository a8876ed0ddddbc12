from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings, secret


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore", populate_by_name=True)

    service_name: str = "orders"
    port: int = 8083
    upstream_timeout_s: float = 5.0
    max_reservations_in_flight: int = 32      # per process: backpressure on stock
    # A checkout that waited this long for one of those slots answers 429 checkout-busy (Retry-After 1 s),
    # having written nothing: a crowd is told to retry instead of queueing past the gateway's timeout.
    checkout_queue_limit_s: float = 8.0
    sold_out_memory_s: float = 1.0            # the same demand refused as sold-out is answered so at once this long
    quote_cache_s: float = 2.0               # identical price quotes within this delay share one catalog call
    # Limited (flash-sale) SKUs: {"<sku_id>": {"per_order": n, "per_member": n}} (JSON in ORDERS_LIMITED_SKUS);
    # either bound may be left out. SKUs not listed have no limit beyond 99 units a line.
    limited_skus: dict[str, dict[str, int]] = {}
    attribution_cache_s: float = 60.0         # a member's attribution binding is reused this long

    payment_window_s: int = 15 * 60           # unpaid orders are cancelled after this
    reservation_margin_s: int = 120           # stock holds a little longer than the payment window
    paid_reservation_ttl_s: int = 10 * 86400  # once paid, stock stays reserved until shipped / picked up
    uncollected_after_s: int = 3 * 86400      # ready_for_pickup and not collected -> cancelled and refunded
    auto_complete_after_s: int = 7 * 86400    # shipped -> completed when nobody confirmed delivery
    stuck_checkout_after_s: int = 30          # a checkout saga this old without an outcome is compensated
    sweep_interval_s: float = 5.0

    # This service's credential at membership (ORDERS_CLIENT_SECRET; membership is given the same value).
    client_secret: str = secret()

    # Keys the HMAC that derives and checks pickup codes.
    pickup_code_secret: str = secret()
    pickup_max_attempts: int = 5

    return_code_ttl_s: int = 15 * 60          # a return code from the member's app works this long, once
    return_manager_above_fen: int = 50_000    # a counter return refunding more than this needs a store manager

    payment_provider: str = "sandbox"
    # Shared with the payment provider: it signs its callbacks with it.
    payment_webhook_secret: str = secret()
    # An attempt without an outcome after this long is stale (its process died mid-charge, or the provider
    # timed out): the order may then be cancelled or paid again (after asking the provider about it); a
    # payment the provider took anyway arrives by its signed callback and is refunded.
    payment_attempt_timeout_s: int = 30
    payment_fee_per_10000: int = 60           # 0.6 % provider fee
