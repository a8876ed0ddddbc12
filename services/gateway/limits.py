"""Which buckets a request spends, by the route's limit class. Pure, unit-tested.

A secret is guessed against a target (a phone's code, a username's password, an order's pickup code), so the
budgets that stop guessing are keyed on the target, whatever address the guesses come from, and on the
requester and the target together (one device's retries). The client address alone is only a coarse flood
guard: behind a store's Wi-Fi or a carrier NAT hundreds of honest people share one.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from libs.principal import Principal
from services.gateway.policy import LimitClass

# A login body is a few short fields; the gateway reads it (to find the target) only up to this size.
LOGIN_BODY_MAX_BYTES = 8 * 1024
TARGET_FIELDS = {LimitClass.OTP_SEND: "phone", LimitClass.OTP_LOGIN: "phone", LimitClass.STAFF_LOGIN: "username"}
# The prefix of a target's key, so that asking for a code and guessing it are separate budgets.
TARGET_KINDS = {LimitClass.OTP_SEND: "otp-send", LimitClass.OTP_LOGIN: "otp", LimitClass.STAFF_LOGIN: "staff"}
TARGET_MAX_CHARS = 128


@dataclass(frozen=True)
class Take:
    bucket: str  # a rule name (bounded: a metric label)
    key: str


def _phone(value: str) -> str:
    """As membership normalises it: "+86 138-0000" and "+861380000" are one phone, one budget."""
    return re.sub(r"[\s-]", "", value)


def login_target(limit: LimitClass, body: bytes) -> str | None:
    """The phone or username a login body names; None when it names none (the service will refuse it)."""
    field = TARGET_FIELDS.get(limit)
    if field is None or not body:
        return None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    value = document.get(field) if isinstance(document, dict) else None
    if not isinstance(value, str) or not value.strip():
        return None
    value = _phone(value) if field == "phone" else value.strip()
    return value[:TARGET_MAX_CHARS]


def takes(limit: LimitClass, *, address: str, principal: Principal | None, params: dict[str, str],
          target: str | None) -> list[Take]:
    """The buckets of a route class beyond the per-address and per-principal ones, cheapest refusal first."""
    if limit in TARGET_KINDS:
        kind = TARGET_KINDS[limit]
        spent = [Take("login_ip", address)]
        if target is not None:
            spent.append(Take("login_pair", f"{kind}|{address}|{target}"))
            spent.append(Take("otp_send" if limit is LimitClass.OTP_SEND else "login_target", f"{kind}|{target}"))
        return spent
    if limit is LimitClass.PICKUP:
        spent = [Take("pickup_order", params.get("order_id", ""))]
        if principal is not None:
            # The store's counter, however many staff and devices serve it; staff without a store count alone.
            store = ",".join(sorted(principal.store_ids)) or principal.subject
            spent.append(Take("pickup_store", store))
        return spent
    return []
