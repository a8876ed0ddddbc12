"""The pure rules: who gets what, on which channel, when; retries with backoff and jitter."""
from __future__ import annotations

import random
from datetime import UTC, datetime, time

import pytest

from services.notifications.domain.policy import (
    Outcome, Preferences, QuietHours, Recipient, RetryPolicy, after_attempt, cap_day, normalize_locale, plan,
    quiet_until, campaign_slot,
)
from services.notifications.domain.rules import (
    CAMPAIGN_RULE, CONSUMED_EVENT_TYPES, PRIVATE_EVENT_TYPES, RULES, WEBHOOK_EVENT_TYPES, template_keys,
)
from services.notifications.domain.templates import default_for

NOON_SHANGHAI = datetime(2026, 3, 2, 4, 0, tzinfo=UTC)   # 12:00 in Shanghai
NIGHT_SHANGHAI = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai

member = Recipient(id="mbr_1", member_id="mbr_1", phone="+8613800000009", email="a@example.com",
                   locale="en", marketing_consent=True)
no_consent = Recipient(id="mbr_2", member_id="mbr_2", phone="+8613800000008", marketing_consent=False)
night = QuietHours(time(22, 0), time(8, 0), "Asia/Shanghai")


def channels_of(result):
    return [d.channel for d in result.deliveries]


def test_transactional_goes_to_every_enabled_addressable_channel():
    result = plan(RULES["orders.order.ready_for_pickup"], member, Preferences(), NOON_SHANGHAI)
    assert channels_of(result) == ["sms", "push"]
    assert all(d.status == "pending" and d.due_at == NOON_SHANGHAI for d in result.deliveries)
    assert result.counts_toward_cap is False


def test_transactional_is_sent_even_with_every_channel_switched_off():
    prefs = Preferences(channels={"sms": False, "push": False, "email": False, "wechat": False},
                        categories={"service": False, "marketing": False})
    result = plan(RULES["orders.order.ready_for_pickup"], member, prefs, NIGHT_SHANGHAI)
    assert channels_of(result) == ["sms"]
    assert result.deliveries[0].status == "pending"


def test_transactional_is_not_deferred_by_quiet_hours():
    result = plan(RULES["orders.order.shipped"], member, Preferences(quiet_hours=night), NIGHT_SHANGHAI)
    assert {d.due_at for d in result.deliveries} == {NIGHT_SHANGHAI}


def test_channel_preference_picks_the_route():
    result = plan(RULES["orders.order.ready_for_pickup"], member, Preferences(channels={"sms": False}), NOON_SHANGHAI)
    assert channels_of(result) == ["push"]


def test_marketing_without_consent_is_suppressed():
    result = plan(RULES["membership.member.dormant"], no_consent, Preferences(), NOON_SHANGHAI)
    assert [d.status for d in result.deliveries] == ["suppressed"]
    assert result.reason == "no-marketing-consent"
    assert result.counts_toward_cap is False


def test_marketing_to_a_phone_only_recipient_needs_consent_too():
    guest = Recipient(id="phone:+861", kind="phone", phone="+861")
    result = plan(CAMPAIGN_RULE, guest, Preferences(), NOON_SHANGHAI)
    assert {d.status for d in result.deliveries} == {"suppressed"}


def test_marketing_switched_off_by_the_member_is_suppressed():
    result = plan(RULES["membership.member.dormant"], member, Preferences(categories={"marketing": False}),
                  NOON_SHANGHAI)
    assert result.reason == "marketing-off" and {d.status for d in result.deliveries} == {"suppressed"}


def test_marketing_in_quiet_hours_is_deferred_to_their_end():
    result = plan(RULES["membership.member.dormant"], member, Preferences(quiet_hours=night), NIGHT_SHANGHAI)
    assert result.reason == "quiet-hours"
    # 08:00 next morning in Shanghai is 00:00 UTC on 3 March.
    assert {d.due_at for d in result.deliveries} == {datetime(2026, 3, 3, 0, 0, tzinfo=UTC)}
    assert {d.status for d in result.deliveries} == {"pending"}
    assert result.counts_toward_cap is True


def test_marketing_outside_quiet_hours_goes_now():
    result = plan(RULES["membership.member.dormant"], member, Preferences(quiet_hours=night), NOON_SHANGHAI)
    assert {d.due_at for d in result.deliveries} == {NOON_SHANGHAI} and result.reason is None


def test_service_category_can_be_switched_off_but_transactional_cannot():
    prefs = Preferences(categories={"service": False})
    assert plan(RULES["membership.coupon.issued"], member, prefs, NOON_SHANGHAI).reason == "service-off"
    assert {d.status for d in plan(RULES["orders.order.cancelled"], member, prefs, NOON_SHANGHAI).deliveries} == {
        "pending"}


def test_service_with_every_channel_off_is_recorded_as_suppressed():
    prefs = Preferences(channels={"sms": False, "push": False, "email": False, "wechat": False})
    result = plan(RULES["membership.coupon.issued"], member, prefs, NOON_SHANGHAI)
    assert result.reason == "channels-off" and channels_of(result) == ["push"]
    assert {d.status for d in result.deliveries} == {"suppressed"} and not result.counts_toward_cap


def test_consent_is_the_reason_given_before_the_members_own_switches():
    prefs = Preferences(channels={"sms": False}, categories={"marketing": False})
    assert plan(RULES["membership.member.dormant"], no_consent, prefs, NOON_SHANGHAI).reason == "no-marketing-consent"


def test_no_address_means_no_delivery():
    nobody = Recipient(id="phone:x", kind="phone")
    result = plan(RULES["membership.otp.requested"], nobody, Preferences(), NOON_SHANGHAI)
    assert result.deliveries == () and result.reason == "no-address"


def test_operations_reach_the_store_topic_without_preferences():
    store = Recipient(id="store:loc_1", kind="store")
    result = plan(RULES["stock.level_low"], store, Preferences(channels={"push": False}), NIGHT_SHANGHAI)
    assert channels_of(result) == ["push"] and result.deliveries[0].address == "topic:store:loc_1"


def test_suppressed_plan_for_the_daily_cap():
    result = plan(RULES["membership.coupon.issued"], member, Preferences(), NOON_SHANGHAI).suppressed("daily-cap")
    assert {d.status for d in result.deliveries} == {"suppressed"} and result.reason == "daily-cap"


@pytest.mark.parametrize("now, expected", [
    (datetime(2026, 3, 2, 13, 59, tzinfo=UTC), None),                                # 21:59 local
    (datetime(2026, 3, 2, 14, 0, tzinfo=UTC), datetime(2026, 3, 3, 0, 0, tzinfo=UTC)),  # 22:00 local
    (datetime(2026, 3, 2, 23, 0, tzinfo=UTC), datetime(2026, 3, 3, 0, 0, tzinfo=UTC)),  # 07:00 local, next day
    (datetime(2026, 3, 3, 0, 0, tzinfo=UTC), None),                                  # 08:00 local: over
])
def test_quiet_hours_across_midnight(now, expected):
    assert quiet_until(now, night) == expected


def test_quiet_hours_within_a_day_and_empty_window():
    lunch = QuietHours(time(12, 0), time(14, 0), "UTC")
    assert quiet_until(datetime(2026, 1, 1, 13, 0, tzinfo=UTC), lunch) == datetime(2026, 1, 1, 14, 0, tzinfo=UTC)
    assert quiet_until(datetime(2026, 1, 1, 15, 0, tzinfo=UTC), lunch) is None
    assert quiet_until(NOON_SHANGHAI, QuietHours(time(9, 0), time(9, 0))) is None


def test_cap_day_is_the_members_local_day():
    assert cap_day(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), Preferences()) == "2026-03-03"


@pytest.mark.parametrize("given, expected", [(None, "zh-CN"), ("en", "en"), ("en-US", "en"), ("EN", "en"),
                                             ("zh", "zh-CN"), ("zh_CN", "zh-CN"), ("fr-FR", "zh-CN")])
def test_locales_are_normalized(given, expected):
    assert normalize_locale(given) == expected


def test_backoff_grows_exponentially_with_bounded_jitter():
    policy = RetryPolicy(max_attempts=10, base_delay_ms=1000, max_delay_ms=60_000)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1000), (2, 2000), (3, 4000), (4, 8000), (8, 60_000), (9, 60_000)]:
        delays = {policy.delay_ms(attempt, rng) for _ in range(200)}
        assert min(delays) >= ceiling // 2 and max(delays) <= ceiling
        assert len(delays) > 1  # jitter: not every retry at the same moment


def test_after_attempt_retries_then_fails_for_good():
    policy = RetryPolicy(max_attempts=3, base_delay_ms=100, max_delay_ms=1000)
    transient = Outcome(False, False, "503")
    first = after_attempt(1, transient, policy, now_ms=10_000, rng=random.Random(1))
    assert first.status == "pending" and 10_050 <= first.due_at_ms <= 10_100 and not first.failed_for_good
    assert after_attempt(3, transient, policy, now_ms=0).status == "failed"
    assert after_attempt(3, transient, policy, now_ms=0).failed_for_good
    assert after_attempt(1, Outcome(False, True, "410"), policy, now_ms=0).status == "failed"
    assert after_attempt(2, Outcome(True), policy, now_ms=0).status == "sent"


def test_campaign_pacing_spreads_messages_and_never_schedules_in_the_past():
    slots, free = [], 0
    for _ in range(4):
        slot, free = campaign_slot(free, now_ms=1000, per_second=4)
        slots.append(slot)
    assert slots == [1000, 1250, 1500, 1750]
    # Resuming late: the next slot starts now, not at the stale one.
    assert campaign_slot(free, now_ms=9000, per_second=4) == (9000, 9250)
    assert campaign_slot(500, now_ms=100, per_second=0) == (500, 500)


def test_every_notified_channel_has_default_templates_in_both_locales():
    for template_type, channel in template_keys():
        for locale in ("zh-CN", "en"):
            assert default_for(template_type, channel, locale) is not None, (template_type, channel, locale)


def test_webhooks_cover_design_events_but_never_otp():
    assert "orders.order.placed" in WEBHOOK_EVENT_TYPES and "settlement.entries.posted" in WEBHOOK_EVENT_TYPES
    assert not PRIVATE_EVENT_TYPES & set(WEBHOOK_EVENT_TYPES)
    assert set(CONSUMED_EVENT_TYPES) >= set(WEBHOOK_EVENT_TYPES) | set(RULES)
    assert all(t.split(".")[-1].endswith(("ed", "_low", "_pickup", "expiring", "dormant")) for t in RULES)
