"""Who gets which message on which channel, and when: preferences, consent, quiet hours, caps, retries.

Pure: every function takes the current time and any randomness as arguments.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from libs.refusal import INVALID, Refusal
from services.notifications.domain.rules import (
    DEFAULT_LOCALE, EMAIL, LOCALES, MARKETING, MEMBER_CATEGORIES, OPERATIONS, PERSON_CHANNELS, PUSH, SERVICE, SMS,
    TRANSACTIONAL, WECHAT, Rule,
)

DEFAULT_TIMEZONE = "Asia/Shanghai"


class PreferenceError(Refusal):
    """Preferences that cannot be applied (e.g. an unknown time zone)."""

    default_kind = INVALID


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time
    timezone: str = DEFAULT_TIMEZONE

    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise PreferenceError("unknown-time-zone", f"unknown time zone {self.timezone!r}") from None


@dataclass(frozen=True)
class Preferences:
    channels: dict[str, bool] = field(default_factory=lambda: {c: True for c in PERSON_CHANNELS})
    categories: dict[str, bool] = field(default_factory=lambda: {c: True for c in MEMBER_CATEGORIES})
    quiet_hours: QuietHours | None = None
    daily_cap: int = 5

    def channel_on(self, channel: str) -> bool:
        return self.channels.get(channel, True)

    def category_on(self, category: str) -> bool:
        return self.categories.get(category, True)


@dataclass(frozen=True)
class Recipient:
    """A person (or a team inbox) with what we know of how to reach them."""
    id: str
    kind: str = "member"  # member | phone | store | franchisee
    member_id: str | None = None
    phone: str | None = None
    email: str | None = None
    wechat_openid: str | None = None
    locale: str = DEFAULT_LOCALE
    marketing_consent: bool = False
    name: str | None = None

    def address(self, channel: str) -> str | None:
        if channel == SMS:
            return self.phone
        if channel == EMAIL:
            return self.email
        if channel == WECHAT:
            return self.wechat_openid
        if channel == PUSH:
            # Members receive pushes in the app by member id; staff and franchisees on their team's topic.
            if self.kind == "phone":
                return None
            return self.member_id if self.kind == "member" else f"topic:{self.id}"
        return None


def normalize_locale(value: str | None) -> str:
    """Map what clients send (zh, zh_CN, en-US, EN) to a supported locale; zh-CN by default."""
    if not value:
        return DEFAULT_LOCALE
    lowered = value.replace("_", "-").lower()
    for locale in LOCALES:
        if lowered == locale.lower():
            return locale
    language = lowered.split("-", 1)[0]
    for locale in LOCALES:
        if locale.lower().split("-", 1)[0] == language:
            return locale
    return DEFAULT_LOCALE


@dataclass(frozen=True)
class Planned:
    """One delivery to create for a recipient on a channel."""
    channel: str
    address: str | None
    status: str  # pending | suppressed
    due_at: datetime
    reason: str | None = None  # why suppressed or deferred


@dataclass(frozen=True)
class Plan:
    deliveries: tuple[Planned, ...]
    counts_toward_cap: bool  # the caller must take one slot of the daily cap before sending
    reason: str | None = None

    def suppressed(self, reason: str) -> Plan:
        return Plan(tuple(replace(p, status="suppressed", reason=reason) for p in self.deliveries), False, reason)


def quiet_until(now: datetime, quiet: QuietHours | None) -> datetime | None:
    """When the quiet period that contains `now` ends (UTC), or None when `now` is not in quiet hours.

    A window whose end is before its start crosses midnight (22:00-08:00). start == end means no window.
    """
    if quiet is None or quiet.start == quiet.end:
        return None
    zone = quiet.zone()
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside = quiet.start <= clock < quiet.end
        end_day = local.date()
    else:
        inside = clock >= quiet.start or clock < quiet.end
        end_day = local.date() + timedelta(days=1) if clock >= quiet.start else local.date()
    if not inside:
        return None
    end_local = datetime.combine(end_day, quiet.end, tzinfo=zone)
    return end_local.astimezone(timezone.utc)


def cap_day(now: datetime, prefs: Preferences) -> str:
    """The member's local calendar day a daily cap counts against."""
    zone = prefs.quiet_hours.zone() if prefs.quiet_hours else ZoneInfo(DEFAULT_TIMEZONE)
    return now.astimezone(zone).date().isoformat()


def plan(rule: Rule, recipient: Recipient, prefs: Preferences, now: datetime,
         channels: tuple[str, ...] | None = None) -> Plan:
    """Decide the deliveries of one message to one recipient.

    Transactional: on every route the member keeps on that we can address; if they switched all of them off,
    still on the first addressable route (a pickup code or a refund notice must reach them).
    Service: the same routes, nothing if the member switched the category off.
    Marketing: only with consent and the category on; deferred to the end of quiet hours.
    Operations: every addressable route, no member preferences.
    """
    routes = channels or rule.channels
    addressable = [c for c in routes if recipient.address(c)]
    if not addressable:
        return Plan((), False, "no-address")
    is_member = recipient.kind == "member"
    if rule.category == OPERATIONS or not is_member:
        chosen = addressable
    else:
        chosen = [c for c in addressable if prefs.channel_on(c)]
        if not chosen and rule.category == TRANSACTIONAL:
            chosen = addressable[:1]

    # Why not to send at all, most important first: consent is a legal matter, the rest is the member's choice.
    # Suppressed deliveries are still recorded, so the log can answer "why did I not get it".
    suppress = None
    if rule.category == MARKETING and not recipient.marketing_consent:
        suppress = "no-marketing-consent"  # required of anyone, member or not
    elif is_member and rule.category in (SERVICE, MARKETING) and not prefs.category_on(rule.category):
        suppress = f"{rule.category}-off"
    elif not chosen:
        suppress = "channels-off"
    if suppress is not None:
        return Plan(tuple(Planned(c, recipient.address(c), "suppressed", now, suppress) for c in (chosen or addressable)),
                    False, suppress)

    due, reason = now, None
    if rule.category == MARKETING and is_member:
        until = quiet_until(now, prefs.quiet_hours)
        if until is not None:
            due, reason = until, "quiet-hours"
    deliveries = tuple(Planned(c, recipient.address(c), "pending", due, reason) for c in chosen)
    return Plan(deliveries, rule.category in (SERVICE, MARKETING) and is_member, reason)


# --- retries ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_ms: int = 2_000
    max_delay_ms: int = 10 * 60_000

    def delay_ms(self, attempt: int, rng: random.Random | None = None) -> int:
        """Delay before the attempt after `attempt` (1-based): exponential, capped, with equal jitter.

        Half the exponential delay is kept so retries never bunch up at zero, the other half is random so
        that many deliveries failing together (a receiver down) do not come back in lockstep.
        """
        rng = rng or random.Random()
        ceiling = min(self.max_delay_ms, self.base_delay_ms * (2 ** max(attempt - 1, 0)))
        half = ceiling // 2
        return half + rng.randint(0, ceiling - half)


SENT, PENDING, SENDING, FAILED, SUPPRESSED = "sent", "pending", "sending", "failed", "suppressed"
STATUSES = (PENDING, SENDING, SENT, FAILED, SUPPRESSED)


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt as the adapter reports it."""
    ok: bool
    permanent: bool = False
    error: str | None = None


@dataclass(frozen=True)
class AttemptResult:
    status: str  # sent | pending (retry later) | failed
    due_at_ms: int | None
    failed_for_good: bool


def after_attempt(attempt: int, outcome: Outcome, policy: RetryPolicy, now_ms: int,
                  rng: random.Random | None = None) -> AttemptResult:
    """What a delivery becomes after its `attempt`-th try."""
    if outcome.ok:
        return AttemptResult(SENT, None, False)
    if outcome.permanent or attempt >= policy.max_attempts:
        return AttemptResult(FAILED, None, True)
    return AttemptResult(PENDING, now_ms + policy.delay_ms(attempt, rng), False)


def campaign_slot(next_free_ms: int, now_ms: int, per_second: float) -> tuple[int, int]:
    """Pace a campaign: (when this message is due, when the next one may be due).

    Slots are 1/per_second apart and never in the past, so a runner that starts late or resumes after a
    crash does not burst the backlog out at once.
    """
    slot = max(next_free_ms, now_ms)
    if per_second <= 0:
        return slot, slot
    return slot, slot + max(1, int(1000 / per_second))
