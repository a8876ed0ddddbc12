"""Request models: what a client may send is what can be stored and applied."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.notifications.domain.rules import template_keys
from services.notifications.domain.templates import default_for
from services.notifications.schemas import CampaignIn, PreferencesIn, WebhookIn


def test_quiet_hours_are_applied_whole_with_the_default_time_zone():
    given = PreferencesIn.model_validate({"quiet_hours": {"start": "22:00", "end": "07:00"}}).changes()
    assert given == {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Asia/Shanghai"}}
    assert PreferencesIn.model_validate({"quiet_hours": None}).changes() == {"quiet_hours": None}
    assert PreferencesIn.model_validate({"daily_cap": 3}).changes() == {"daily_cap": 3}


def test_webhook_event_types_are_known_public_ones_and_deduplicated():
    body = WebhookIn.model_validate({"url": "https://partner.example/hook",
                                     "event_types": ["stock.level_low", "orders.order.placed", "stock.level_low"]})
    assert body.event_types == ["orders.order.placed", "stock.level_low"]
    with pytest.raises(ValidationError):
        WebhookIn.model_validate({"url": "https://partner.example/hook", "event_types": ["membership.otp.requested"]})


def test_every_template_key_has_a_built_in_text_in_every_locale():
    for template_type, channel in template_keys():
        for locale in ("zh-CN", "en"):
            subject, body = default_for(template_type, channel, locale)
            assert body, (template_type, channel, locale)
