"""One-time login codes: issuing limits and attempt limits. Pure; the caller supplies time and randomness."""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from libs.sealing import unseal
from services.membership.domain.errors import CONFLICT, INVALID, LIMITED, UNAUTHENTICATED, MembershipError

PHONE_PATTERN = re.compile(r"^\+[1-9]\d{6,14}$")
CODE_DIGITS = 6
# The pending code is also kept sealed (under the pepper, bound to the phone) for notifications to fetch when it
# sends the SMS: the code itself never travels on the bus.
SEALED_FOR = "otp-code"


@dataclass(frozen=True)
class OtpPolicy:
    ttl_s: int = 300
    max_attempts: int = 5
    max_requests: int = 5
    request_window_s: int = 3600


def normalize_phone(phone: str) -> str:
    """E.164 with a leading '+'; spaces and dashes are tolerated, anything else is refused."""
    compact = re.sub(r"[\s-]", "", phone or "")
    if not PHONE_PATTERN.match(compact):
        raise MembershipError("invalid-phone", "phone must be in international format, e.g. +8613800000000", kind=INVALID)
    return compact


def new_code(random_below) -> str:
    """A 6-digit code from `random_below(n)` (secrets.randbelow in production)."""
    return f"{random_below(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"


def code_digest(phone: str, code: str, pepper: str) -> str:
    """Stored instead of the code, so a database reader cannot log in with pending codes."""
    return hmac.new(pepper.encode(), f"{phone}:{code}".encode(), hashlib.sha256).hexdigest()


def next_request_window(window_start_ms: int, requests_in_window: int, now_ms: int,
                        policy: OtpPolicy) -> tuple[int, int]:
    """The (window_start_ms, requests_in_window) after one more code request; refuses beyond the limit."""
    if now_ms - window_start_ms >= policy.request_window_s * 1000:
        return now_ms, 1
    if requests_in_window >= policy.max_requests:
        retry_after_s = max(1, (window_start_ms + policy.request_window_s * 1000 - now_ms) // 1000)
        raise MembershipError("otp-rate-limited",
                              f"too many codes requested for this phone; try again in {retry_after_s} s",
                              retry_after_s=retry_after_s, kind=LIMITED)
    return window_start_ms, requests_in_window + 1


def check_code(challenge: dict | None, presented_digest: str, now_ms: int, policy: OtpPolicy) -> None:
    """Judge one attempt. The caller has already counted the attempt (so concurrent guesses are bounded)."""
    if challenge is None or challenge.get("used"):
        raise MembershipError("otp-invalid", "no code is pending for this phone; request a new one", kind=UNAUTHENTICATED)
    if challenge["attempts"] > policy.max_attempts:
        raise MembershipError("otp-attempts-exceeded",
                              "too many wrong codes; request a new code", kind=LIMITED)
    if now_ms >= challenge["expires_at_ms"]:
        raise MembershipError("otp-expired", "the code has expired; request a new one", kind=UNAUTHENTICATED)
    if not hmac.compare_digest(challenge["digest"], presented_digest):
        remaining = max(0, policy.max_attempts - challenge["attempts"])
        raise MembershipError("otp-invalid", "the code is not correct",
                              attempts_remaining=remaining, kind=UNAUTHENTICATED)


def code_to_send(challenge: dict | None, phone: str, now_ms: int, policy: OtpPolicy, pepper: str) -> str:
    """The pending code of a phone, for its SMS: only while it can still be used."""
    pending = challenge is not None and not challenge.get("used") and challenge.get("code_sealed") and \
        now_ms < challenge["expires_at_ms"] and challenge["attempts"] < policy.max_attempts
    code = unseal(pepper, SEALED_FOR, phone, challenge["code_sealed"]) if pending else None
    if code is None:
        raise MembershipError("no-pending-code", "no code is pending for this phone", kind=CONFLICT)
    return code
