from pydantic import Field
from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings, secret


class MembershipSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MEMBERSHIP_", extra="ignore", populate_by_name=True)

    service_name: str = "membership"
    port: int = 8084

    # Tokens
    member_token_ttl_s: int = 3600
    staff_token_ttl_s: int = 8 * 3600
    service_token_ttl_s: int = 600
    refresh_token_ttl_s: int = 30 * 86400  # single use; each refresh hands out the next one
    rsa_key_bits: int = 2048
    # Private signing keys are stored encrypted with it (PKCS#8), so a database dump alone cannot mint tokens.
    signing_key_passphrase: str = secret()
    # How often a replica re-reads the shared keyring, so a rotation done elsewhere is picked up.
    keyring_refresh_s: float = 30.0
    # The services that may ask for a service token, each with its own secret (the same variable that
    # service reads as its own credential). What each may call is libs.auth.SERVICE_GRANTS.
    orders_client_secret: str = secret("ORDERS_CLIENT_SECRET")
    notifications_client_secret: str = secret("NOTIFICATIONS_CLIENT_SECRET")
    gateway_client_secret: str = secret("GATEWAY_CLIENT_SECRET")

    # One-time codes: the pepper keys the stored digest of a code (its own secret, shared with nothing).
    otp_pepper: str = secret()
    otp_ttl_s: int = 300
    otp_max_attempts: int = 5            # wrong codes before the code is burnt
    # Codes per phone per window: a short window, so whoever spends a phone's budget (a stranger can ask for
    # the owner's phone) keeps the owner waiting minutes, not an hour. The gateway's per-phone budget is
    # smaller (it refuses first); this one holds across gateway replicas.
    otp_max_requests: int = 10
    otp_request_window_s: int = 600
    # argon2id cost (the hash records its own parameters, so raising these later keeps old hashes valid)
    password_time_cost: int = 3
    password_memory_kib: int = 65536
    # Each hash takes `password_memory_kib`: at most this many run at once and this many more wait; a login
    # beyond that is answered 429 `login-busy` before anything is hashed (a flood cannot exhaust memory).
    password_hash_concurrency: int = 4
    password_hash_waiting: int = 8
    # Staff login throttling (domain/logins.py), a progressive delay, never a lock: per username and requester
    # a few free failures, then a delay doubling from `staff_login_first_delay_s` up to a long cap; per
    # username from anywhere many free failures and a short cap (a stranger cannot keep the owner out longer).
    staff_login_requester_free_failures: int = 5
    staff_login_requester_max_delay_s: float = 900.0
    staff_login_username_free_failures: int = 20
    staff_login_username_max_delay_s: float = 60.0
    staff_login_first_delay_s: float = 1.0
    staff_login_forget_after_s: float = 3600.0  # failures this old (since the last one) no longer count

    # Attribution
    binding_days: int = 365
    # The token a member's scan answers with: their checkout names it to credit the QR they scanned.
    scan_token_ttl_s: int = 30 * 60
    # Staff naming shoppers' channel identities at the counter: this many per staff member per hour.
    staff_identity_scans_per_hour: int = 30

    # Points
    points_per_yuan_earned: int = 1
    points_per_yuan_redeemed: int = 100
    points_max_redeem_share_pct: int = 50
    points_validity_days: int = 365

    # Tiers by rolling 12-month paid amount (fen); multiplier of earned points
    tier_thresholds_fen: dict[str, int] = Field(default_factory=lambda: {
        "member": 0, "silver": 100_000, "gold": 500_000, "platinum": 2_000_000})
    tier_multipliers: dict[str, float] = Field(default_factory=lambda: {
        "member": 1.0, "silver": 1.2, "gold": 1.5, "platinum": 2.0})

    # Checkout holds: a hold lets go by itself after orders' payment window (15 min) plus a margin, unless the
    # hold request names its own ttl_s; the sweep releases expired, uncommitted holds.
    hold_ttl_s: int = 20 * 60
    hold_max_ttl_s: int = 30 * 86400
    hold_expiry_job_interval_s: float = 30.0

    # Jobs
    dormant_after_days: int = 180
    dormant_job_interval_s: float = 3600.0
    expiry_job_interval_s: float = 3600.0

    def client_secrets(self) -> dict[str, str]:
        """client id -> its secret."""
        return {"orders": self.orders_client_secret, "notifications": self.notifications_client_secret,
                "gateway": self.gateway_client_secret}
