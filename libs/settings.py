"""Settings read from the environment, one subclass per service.

Infrastructure settings shared by every service use plain names (MONGO_URL, AMQP_URL, ...);
service-specific ones carry the service prefix (e.g. STOCK_PORT) through each subclass's env_prefix.
"""
from __future__ import annotations

import os
from typing import Any

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SECRET_MIN_BYTES = 32
# Values this repository has published as defaults or examples: whoever reads it knows them.
PUBLISHED_SECRETS = frozenset({
    "dev-service-secret-change-me", "dev-pickup-secret-change-me", "dev-payment-webhook-secret-change-me",
    "change-me", "changeme", "secret", "password"})
DEV_SECRET_PREFIX = "dev-only-"


def shared(name: str, default, **kw):
    """A field read from an unprefixed environment variable shared by all services."""
    return Field(default, validation_alias=AliasChoices(name, name.lower()), **kw)


def secret(env: str | None = None, description: str = "") -> Any:
    """A secret setting: no usable default. Outside dev mode the service refuses to start unless it is set, at
    least SECRET_MIN_BYTES long and not a published value; in dev mode an unset one gets a fixed dev value.
    `env` names an unprefixed variable (a secret two services share); by default it is <PREFIX><FIELD>."""
    # repr=False: a secret never shows in a settings repr (tracebacks, logs).
    extra = {"secret": True}
    if env is None:
        return Field("", description=description, json_schema_extra=extra, repr=False)
    return Field("", validation_alias=AliasChoices(env, env.lower()), description=description,
                 json_schema_extra=extra, repr=False)


def dev_secret(env: str) -> str:
    """The value of an unset secret in dev mode: the same in every process (both ends of a shared secret
    agree), and refused outside dev mode."""
    return f"{DEV_SECRET_PREFIX}{env.lower()}-not-a-secret"


def weakness(value: str) -> str | None:
    """Why a secret cannot be used outside dev mode, or None."""
    if not value:
        return "is not set"
    if value in PUBLISHED_SECRETS or value.startswith(DEV_SECRET_PREFIX) or "change-me" in value:
        return "is a published default"
    if len(value.encode()) < SECRET_MIN_BYTES:
        return f"is shorter than {SECRET_MIN_BYTES} bytes"
    return None


class _ServiceMongoUrl(PydanticBaseSettingsSource):
    """`<SERVICE>_MONGO_URL` (the subclass's env_prefix + MONGO_URL): this service's own database server,
    over the shared MONGO_URL (locally each service has its own nx-27017; see scripts/suite.py)."""

    def get_field_value(self, field, field_name):
        return None, field_name, False

    def __call__(self) -> dict:
        prefix = self.settings_cls.model_config.get("env_prefix") or ""
        value = os.environ.get(f"{prefix}MONGO_URL".upper()) if prefix else None
        return {"MONGO_URL": value} if value else {}


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # Precedence: explicit arguments, then <SERVICE>_MONGO_URL, then the environment (MONGO_URL, ...).
        return init_settings, _ServiceMongoUrl(settings_cls), env_settings, dotenv_settings, file_secret_settings

    service_name: str = "service"
    host: str = "127.0.0.1"
    port: int = 8080

    # Overridable per service as <SERVICE>_MONGO_URL (e.g. CATALOG_MONGO_URL).
    mongo_url: str = shared("MONGO_URL", "mongodb://127.0.0.1:27017/?directConnection=true")
    mongo_db_prefix: str = shared("MONGO_DB_PREFIX", "o2o_")
    # "auto": serialize transactions in-process when the server is not a replica set member
    # (the local nx-27017 wire server cannot isolate concurrent transactions).
    mongo_serialize_transactions: str = shared("MONGO_SERIALIZE_TRANSACTIONS", "auto")

    amqp_url: str = shared("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    # Prefix for every exchange and queue name, so test runs never see each other's messages.
    bus_namespace: str = shared("O2O_BUS_NAMESPACE", "")
    # Deliveries are handled in batches (one unit of work each): the prefetch leaves room for a few batches.
    bus_prefetch: int = shared("O2O_BUS_PREFETCH", 256)
    bus_batch_size: int = shared("O2O_BUS_BATCH_SIZE", 100)
    # A batch that starts small waits this long once for more deliveries already on their way: fewer, larger
    # units of work when events stream in (each costs a transaction), at most this much latency when idle.
    bus_batch_linger_ms: float = shared("O2O_BUS_BATCH_LINGER_MS", 2)
    # Sent outbox events and inbox ids are kept this long, far beyond any broker redelivery (retries take
    # seconds; a DLQ replay by an operator days at most), then purged.
    bus_retention_hours: float = shared("O2O_BUS_RETENTION_HOURS", 168)
    bus_max_attempts: int = shared("O2O_BUS_MAX_ATTEMPTS", 5)
    bus_retry_delay_ms: int = shared("O2O_BUS_RETRY_DELAY_MS", 2000)
    outbox_poll_interval_s: float = shared("O2O_OUTBOX_POLL_INTERVAL_S", 0.5)
    # After a commit wakes the relay it waits this long, so events committed together leave in one batch.
    outbox_coalesce_ms: float = shared("O2O_OUTBOX_COALESCE_MS", 5)

    log_level: str = shared("LOG_LEVEL", "INFO")
    dev_mode: bool = shared("O2O_DEV_MODE", False)

    # Token verification (issuer is membership; every service re-verifies the caller's token).
    jwks_url: str = shared("O2O_JWKS_URL", "http://127.0.0.1:8084/auth/jwks")
    jwt_issuer: str = shared("O2O_JWT_ISSUER", "o2o-membership")
    jwt_audience: str = shared("O2O_JWT_AUDIENCE", "o2o-api")

    # This service's own credential at membership's /auth/service/token (<SERVICE>_CLIENT_SECRET). Services that
    # call others declare it as a secret; membership holds each client's secret under the same variable.
    client_secret: str = ""
    demo_data: bool = shared("O2O_DEMO_DATA", False)

    # Where every service listens (one place for all of them): <SERVICE>_URL.
    catalog_url: str = shared("CATALOG_URL", "http://127.0.0.1:8081")
    stock_url: str = shared("STOCK_URL", "http://127.0.0.1:8082")
    orders_url: str = shared("ORDERS_URL", "http://127.0.0.1:8083")
    membership_url: str = shared("MEMBERSHIP_URL", "http://127.0.0.1:8084")
    notifications_url: str = shared("NOTIFICATIONS_URL", "http://127.0.0.1:8085")
    settlement_url: str = shared("SETTLEMENT_URL", "http://127.0.0.1:8086")

    @classmethod
    def secret_variables(cls) -> dict[str, str]:
        """Field name -> environment variable of every secret this service needs."""
        prefix = (cls.model_config.get("env_prefix") or "").upper()
        found = {}
        for name, field in cls.model_fields.items():
            if not (field.json_schema_extra or {}).get("secret"):
                continue
            alias = field.validation_alias
            found[name] = alias.choices[0] if isinstance(alias, AliasChoices) else f"{prefix}{name.upper()}"
        return found

    @model_validator(mode="after")
    def _secrets_are_usable(self):
        refused = []
        for name, env in self.secret_variables().items():
            value = getattr(self, name)
            if self.dev_mode:
                if not value:
                    object.__setattr__(self, name, dev_secret(env))
            elif (reason := weakness(value)) is not None:
                refused.append(f"{env} {reason}")
        if refused:
            raise ValueError(f"{'; '.join(refused)} (O2O_DEV_MODE is off: every secret must be set, at least "
                             f"{SECRET_MIN_BYTES} bytes long and not a published default)")
        return self

    @classmethod
    def load(cls, **values):
        """The settings from the environment, or exit with a message naming each variable that is wrong."""
        try:
            return cls(**values)
        except ValidationError as exc:
            reasons = "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())
            raise SystemExit(f"{cls.model_fields['service_name'].default} refuses to start: {reasons}") from None

    @property
    def mongo_db(self) -> str:
        return f"{self.mongo_db_prefix}{self.service_name}"

    def service_urls(self) -> dict[str, str]:
        """The base URL of each domain service, by name."""
        return {"catalog": self.catalog_url, "stock": self.stock_url, "orders": self.orders_url,
                "membership": self.membership_url, "notifications": self.notifications_url,
                "settlement": self.settlement_url}


def service_url_field(service: str, port: int):
    """Base URL of another service, overridable as <SERVICE>_URL."""
    env = f"{service.upper()}_URL"
    return Field(f"http://127.0.0.1:{port}", validation_alias=AliasChoices(env, env.lower()))
