"""Outside dev mode a service refuses to start on a secret that is unset, short or published.

The attack this closes: a deployment that forgot a secret ran on the default printed in the repository, so
anyone could sign payment callbacks, mint service tokens or check OTP digests with it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from libs.settings import PUBLISHED_SECRETS, SECRET_MIN_BYTES, dev_secret, weakness
from services.membership.settings import MembershipSettings
from services.notifications.settings import NotificationsSettings
from services.orders.settings import OrdersSettings

ROOT = Path(__file__).resolve().parents[3]
WITH_SECRETS = [OrdersSettings, MembershipSettings, NotificationsSettings]
GOOD = "s" * SECRET_MIN_BYTES
OLD_DEFAULTS = ["dev-service-secret-change-me", "dev-pickup-secret-change-me", "dev-payment-webhook-secret-change-me"]


@pytest.fixture(autouse=True)
def no_secrets_in_the_environment(monkeypatch):
    for cls in WITH_SECRETS:
        for env in cls.secret_variables().values():
            monkeypatch.delenv(env, raising=False)
    monkeypatch.delenv("O2O_DEV_MODE", raising=False)


def test_every_secret_of_the_issue_is_declared():
    assert set(OrdersSettings.secret_variables().values()) == {
        "ORDERS_CLIENT_SECRET", "ORDERS_PICKUP_CODE_SECRET", "ORDERS_PAYMENT_WEBHOOK_SECRET"}
    assert set(MembershipSettings.secret_variables().values()) == {
        "MEMBERSHIP_SIGNING_KEY_PASSPHRASE", "MEMBERSHIP_OTP_PEPPER", "ORDERS_CLIENT_SECRET",
        "NOTIFICATIONS_CLIENT_SECRET", "GATEWAY_CLIENT_SECRET"}
    assert set(NotificationsSettings.secret_variables().values()) == {"NOTIFICATIONS_CLIENT_SECRET"}
    from services.gateway.settings import GatewaySettings
    assert set(GatewaySettings.secret_variables().values()) == {"GATEWAY_CLIENT_SECRET"}


def test_weak_values_are_named_for_what_is_wrong():
    assert weakness("") == "is not set"
    for value in [*OLD_DEFAULTS, *PUBLISHED_SECRETS, dev_secret("ORDERS_PICKUP_CODE_SECRET")]:
        assert weakness(value) == "is a published default", value
    assert weakness("x" * (SECRET_MIN_BYTES - 1)) == f"is shorter than {SECRET_MIN_BYTES} bytes"
    assert weakness(os.urandom(24).hex()) is None


@pytest.mark.parametrize("cls", WITH_SECRETS, ids=lambda c: c.__name__)
def test_each_missing_default_or_short_secret_stops_the_service_naming_its_variable(cls, monkeypatch):
    variables = cls.secret_variables()
    for field, env in variables.items():
        for bad, reason in [(None, "is not set"), (OLD_DEFAULTS[0], "published default"),
                            (dev_secret(env), "published default"), ("short", "shorter than")]:
            values = {name: GOOD for name in variables if name != field}
            if bad is not None:
                values[field] = bad
            with pytest.raises(SystemExit) as stopped:
                cls.load(dev_mode=False, **values)
            message = str(stopped.value)
            assert env in message and reason in message, message
            assert all(other not in message for other in variables.values() if other != env), message
    cls.load(dev_mode=False, **{name: GOOD for name in variables})  # all set: it starts


def test_dev_mode_fills_unset_secrets_with_the_same_value_on_both_ends():
    orders, membership = OrdersSettings(dev_mode=True), MembershipSettings(dev_mode=True)
    assert orders.client_secret == membership.client_secrets()["orders"] == dev_secret("ORDERS_CLIENT_SECRET")
    assert membership.otp_pepper != membership.orders_client_secret  # the OTP pepper is its own secret
    assert orders.pickup_code_secret != orders.payment_webhook_secret


@pytest.mark.parametrize("service,variable", [("orders", "ORDERS_PAYMENT_WEBHOOK_SECRET"),
                                              ("membership", "MEMBERSHIP_OTP_PEPPER"),
                                              ("notifications", "NOTIFICATIONS_CLIENT_SECRET")])
def test_a_service_process_started_without_dev_mode_on_defaults_exits_non_zero(service, variable):
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRET", "_PEPPER", "_PASSPHRASE"))}
    env["O2O_DEV_MODE"] = "false"
    env[variable] = OLD_DEFAULTS[0]
    started = subprocess.run([sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert started.returncode != 0
    assert f"{service} refuses to start" in started.stderr and variable in started.stderr, started.stderr


def test_a_secret_never_shows_in_the_settings_repr():
    settings = OrdersSettings(dev_mode=False, client_secret=GOOD, pickup_code_secret="p" * 40,
                              payment_webhook_secret="w" * 40)
    assert "p" * 40 not in repr(settings) and "w" * 40 not in repr(settings) and GOOD not in repr(settings)
