"""Request and response models of notifications' public API (the OpenAPI the gateway aggregates).

Answers are built by `views.py`; every time is RFC 3339 UTC, and a field that can be null says so here.
"""
from __future__ import annotations

from datetime import time
from typing import Any, Literal

from pydantic import AnyHttpUrl, BaseModel, Field, field_validator, model_validator

from libs.models import Strict
from services.notifications.domain import policy, templates
from services.notifications.domain.rules import CAMPAIGN_PREFIX, WEBHOOK_EVENT_TYPES, is_template_type

PersonChannel = Literal["sms", "wechat", "email", "push"]
CLOCK = r"^([01]\d|2[0-3]):[0-5]\d$"


# --- requests --------------------------------------------------------------------------------------

class DeliveryQuery(Strict):
    recipient: str | None = Field(None, max_length=200)
    status: Literal["pending", "sending", "sent", "failed", "suppressed"] | None = None
    type: str | None = Field(None, max_length=120)
    channel: Literal["sms", "wechat", "email", "push", "webhook", "sink"] | None = None
    event_id: str | None = Field(None, max_length=100)
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=400, description="`next_cursor` of the previous page")

    def filters(self) -> dict[str, Any]:
        """The stored fields a query filters on."""
        named = {"status": self.status, "event_type": self.type, "channel": self.channel, "event_id": self.event_id}
        return {key: value for key, value in named.items() if value}


class QuietHoursIn(Strict):
    start: str = Field(pattern=CLOCK)
    end: str = Field(pattern=CLOCK)
    timezone: str = Field(policy.DEFAULT_TIMEZONE, max_length=64)

    @field_validator("timezone")
    @classmethod
    def known_zone(cls, value: str) -> str:
        try:
            policy.QuietHours(time(0, 0), time(0, 0), value).zone()
        except policy.PreferenceError as exc:
            raise ValueError(exc.detail) from None
        return value


class PreferencesIn(Strict):
    """Partial update: fields left out keep their value. Transactional messages cannot be switched off."""
    channels: dict[PersonChannel, bool] | None = None
    categories: dict[Literal["service", "marketing"], bool] | None = None
    quiet_hours: QuietHoursIn | None = None
    daily_cap: int | None = Field(None, ge=0, le=100)

    def changes(self) -> dict[str, Any]:
        """The fields given; quiet hours whole (with the default time zone), as they replace the stored ones."""
        given = self.model_dump(exclude_unset=True)
        if "quiet_hours" in given:
            given["quiet_hours"] = self.quiet_hours.model_dump() if self.quiet_hours else None
        return given


class TemplateQuery(Strict):
    type: str | None = Field(None, max_length=120)


class TemplateIn(Strict):
    subject: str = Field("", max_length=templates.MAX_TEMPLATE_CHARS)
    body: str = Field(min_length=1, max_length=templates.MAX_TEMPLATE_CHARS)


class PreviewIn(TemplateIn):
    data: dict[str, Any] = Field(default_factory=dict)
    locale: str = "zh-CN"


class WebhookIn(Strict):
    url: AnyHttpUrl
    event_types: list[str] = Field(min_length=1, max_length=len(WEBHOOK_EVENT_TYPES),
                                   json_schema_extra={"items": {"type": "string", "enum": list(WEBHOOK_EVENT_TYPES)}})
    secret: str | None = Field(None, min_length=16, max_length=200)
    description: str = Field("", max_length=500)

    @field_validator("event_types")
    @classmethod
    def known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(WEBHOOK_EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown or private event types: {', '.join(unknown)}")
        return sorted(set(value))


class CampaignIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    tag: str = Field(min_length=1, max_length=100)
    template: str = Field(CAMPAIGN_PREFIX + "announcement", max_length=80)
    channels: list[PersonChannel] = Field(default_factory=lambda: ["sms"], min_length=1, max_length=4)
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("template")
    @classmethod
    def campaign_template(cls, value: str) -> str:
        if not (value.startswith(CAMPAIGN_PREFIX) and is_template_type(value)):
            raise ValueError(f"a campaign sends a '{CAMPAIGN_PREFIX}<name>' template")
        return value


class RecipientIn(Strict):
    name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(None, max_length=32, pattern=r"^\+?[0-9]{5,20}$")
    locale: str | None = Field(None, max_length=16)


class OutboundQuery(Strict):
    channel: Literal["sms", "wechat", "push", "email", "sink"] | None = None
    event_id: str | None = Field(None, max_length=100)
    address: str | None = Field(None, max_length=300)
    limit: int = Field(50, ge=1, le=500)

    def filters(self) -> dict[str, Any]:
        named = {"channel": self.channel, "event_id": self.event_id, "address": self.address}
        return {key: value for key, value in named.items() if value}


# --- answers ---------------------------------------------------------------------------------------

class AttemptOut(BaseModel):
    number: int
    outcome: str
    error: str | None
    status_code: int | None
    started_at: str | None
    finished_at: str | None
    duration_ms: float | None


class DeliveryOut(BaseModel):
    id: str
    event_id: str
    type: str
    category: str
    recipient: str
    member_id: str | None
    channel: str
    address: str | None
    locale: str | None
    subject: str | None
    body: str | None
    status: str
    reason: str | None
    attempt_count: int
    scheduled_at: str | None
    next_attempt_at: str | None
    last_error: str | None
    created_at: str | None
    sent_at: str | None
    failed_at: str | None
    campaign_id: str | None
    attempts: list[AttemptOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


class QuietHoursOut(BaseModel):
    start: str
    end: str
    timezone: str


class PreferencesOut(BaseModel):
    member_id: str
    channels: dict[str, bool]
    categories: dict[str, bool]
    quiet_hours: QuietHoursOut | None
    daily_cap: int
    notes: dict[str, str]


class TemplateOut(BaseModel):
    type: str
    channel: str
    locale: str
    subject: str
    body: str
    is_default: bool
    version: int | None
    updated_at: str | None
    updated_by: str | None


class TemplatePage(BaseModel):
    items: list[TemplateOut]
    next_cursor: str | None


class RenderedOut(BaseModel):
    subject: str
    body: str


class SignatureOut(BaseModel):
    header: str
    scheme: str


class WebhookOut(BaseModel):
    id: str
    url: str
    event_types: list[str]
    active: bool
    description: str
    created_at: str | None
    signature: SignatureOut


class WebhookCreated(WebhookOut):
    secret: str = Field(description="shown once, at creation: keep it to verify signatures")


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None


class CampaignOut(BaseModel):
    id: str
    name: str
    tag: str
    template: str
    channels: list[str]
    status: str
    members_seen: int
    queued: int
    suppressed: int
    rate_per_s: float
    created_at: str | None
    finished_at: str | None
    last_error: str | None


class RecipientOut(BaseModel):
    id: str
    kind: str | None
    name: str | None
    email: str | None
    phone: str | None
    locale: str | None


class OutboundOut(BaseModel):
    delivery_id: str
    channel: str
    address: str
    subject: str
    body: str
    locale: str
    event_id: str
    event_type: str
    sandbox: bool
    recorded_at: str | None


class OutboundPage(BaseModel):
    items: list[OutboundOut]
    next_cursor: str | None


class NotifiedOut(BaseModel):
    category: str
    audience: str
    channels: list[str]


class EventCatalogOut(BaseModel):
    webhook_event_types: list[str]
    channels: list[str]
    categories: list[str]
    locales: list[str]
    notified: dict[str, NotifiedOut]
