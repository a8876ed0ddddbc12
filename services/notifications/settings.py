from typing import Literal

from pydantic_settings import SettingsConfigDict

from libs.settings import ServiceSettings, secret


class NotificationsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", extra="ignore", populate_by_name=True)

    service_name: str = "notifications"
    port: int = 8085
    # This service's credential at membership (NOTIFICATIONS_CLIENT_SECRET; membership is given the same value).
    client_secret: str = secret()

    # Delivery worker: how often it looks for due deliveries, how many it sends at once, and the retry policy.
    delivery_poll_interval_s: float = 0.5
    # A batch is claimed at once: batch / concurrency x send_timeout_s must stay well inside the lease.
    delivery_batch: int = 48
    delivery_concurrency: int = 16
    delivery_lease_s: float = 60.0  # a delivery claimed by a crashed worker is picked up again after this
    max_attempts: int = 6
    retry_base_delay_ms: int = 2_000
    retry_max_delay_ms: int = 10 * 60_000
    send_timeout_s: float = 10.0

    # Email through a real SMTP server ("smtp") or recorded like sms ("sandbox"). None: the sandbox in dev mode
    # (`make run` has no mail server), SMTP otherwise (compose has Mailpit, production a relay).
    email_transport: Literal["smtp", "sandbox"] | None = None
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_use_tls: bool = False
    mail_from: str = "LOOP <no-reply@o2o.example>"

    # Webhook URLs pointing at loopback/private/link-local addresses are refused (an admin API must not become
    # a way to reach internal services). None: allowed in dev mode only, where receivers run locally.
    webhook_allow_private_targets: bool | None = None

    # Every rendered message is also kept in the local sink (dev and demo); None follows O2O_DEV_MODE.
    sink_mirror: bool | None = None

    # Preferences a member has before choosing any.
    default_daily_cap: int = 5

    # Campaigns: members fetched per page from membership, and messages per second at most.
    campaign_poll_interval_s: float = 1.0
    campaign_page_size: int = 200
    campaign_rate_per_s: float = 20.0
    membership_timeout_s: float = 5.0
    # Pickup codes are fetched from orders (login codes from membership) when their message is sent.
    orders_timeout_s: float = 5.0

    @property
    def email_via_smtp(self) -> bool:
        return (self.email_transport or ("sandbox" if self.dev_mode else "smtp")) == "smtp"

    @property
    def webhooks_may_target_private(self) -> bool:
        return self.dev_mode if self.webhook_allow_private_targets is None else self.webhook_allow_private_targets

    @property
    def mirror_to_sink(self) -> bool:
        return self.dev_mode if self.sink_mirror is None else self.sink_mirror
