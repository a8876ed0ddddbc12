"""HTTP entrypoints: thin, they check the caller, parse, call the domain and the repositories, and answer."""
from __future__ import annotations

import secrets
from datetime import UTC, datetime, time
from typing import Any, Literal

from aiohttp import web
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator

from libs.auth import Principal, require
from libs.http import SETTINGS, json_response, parse_body, parse_query
from libs.idempotency import guarded
from libs.problems import Problem, not_found
from libs.service import MONGO
from services.notifications.domain import policy, templates
from services.notifications.domain.targets import private_target
from services.notifications.domain.rules import (
    CAMPAIGN_PREFIX, CAMPAIGN_RULE, CATEGORIES, RULES, CHANNELS, LOCALES, MEMBER_CATEGORIES, PERSON_CHANNELS, SINK,
    WEBHOOK_EVENT_TYPES, is_template_type,
)
from services.notifications.repository import (
    CampaignRepository, DeliveryRepository, OutboundLog, PreferenceRepository, RecipientDirectory,
    TemplateRepository, WebhookRepository, decode_cursor, encode_cursor, new_id, now_ms,
)

routes = web.RouteTableDef()
# Messages whose text is a secret for one person: the log shows that they went out, not what they said.
SECRET_BODIES = frozenset({"membership.otp.requested"})
PersonChannel = Literal["sms", "wechat", "email", "push"]


def iso(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def iso_ms(value: int | None) -> str | None:
    return iso(datetime.fromtimestamp(value / 1000, UTC)) if value is not None else None


# --- delivery log ------------------------------------------------------------------------------------

class DeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    recipient: str | None = Field(None, max_length=200)
    status: Literal["pending", "sending", "sent", "failed", "suppressed"] | None = None
    type: str | None = Field(None, max_length=120)
    channel: Literal["sms", "wechat", "email", "push", "webhook", "sink"] | None = None
    event_id: str | None = Field(None, max_length=100)
    limit: int = Field(50, ge=1, le=200)
    cursor: str | None = Field(None, max_length=200)


def _visible_recipients(principal: Principal) -> set[str] | None:
    """Recipients a caller may see the deliveries of; None means every one (HQ and services)."""
    if principal.is_admin:
        return None
    visible: set[str] = set()
    if principal.member_id:
        visible.add(principal.member_id)
    if principal.has("store_manager", "store_staff"):
        visible.update(f"store:{store_id}" for store_id in principal.store_ids)
    if principal.franchisee_id:
        visible.add(f"franchisee:{principal.franchisee_id}")
    return visible


def _shown_body(doc: dict) -> str | None:
    if doc["channel"] == "webhook":
        return None  # the envelope itself; the receiver has it
    if doc["event_type"] in SECRET_BODIES:
        return "(redacted: contains a one-time password)"
    return doc.get("body")


def _delivery_out(doc: dict, attempts: list[dict]) -> dict:
    return {
        "id": doc["_id"], "event_id": doc["event_id"], "type": doc["event_type"], "category": doc["category"],
        "recipient": doc["recipient_id"], "member_id": doc.get("member_id"), "channel": doc["channel"],
        "address": doc.get("address"), "locale": doc.get("locale"), "subject": doc.get("subject"),
        "body": _shown_body(doc), "status": doc["status"],
        "reason": doc.get("reason"), "attempt_count": doc.get("attempt_count", 0),
        "scheduled_at": iso_ms(doc.get("scheduled_at_ms")),
        "next_attempt_at": iso_ms(doc["due_at_ms"]) if doc["status"] in ("pending", "sending") else None,
        "last_error": doc.get("last_error"), "created_at": iso(doc.get("created_at")),
        "sent_at": iso(doc.get("sent_at")), "failed_at": iso(doc.get("failed_at")),
        "campaign_id": doc.get("campaign_id"),
        "attempts": [{"number": a["number"], "outcome": a["outcome"], "error": a.get("error"),
                      "status_code": a.get("status_code"), "started_at": iso(a.get("started_at")),
                      "finished_at": iso(a.get("finished_at")), "duration_ms": a.get("duration_ms")}
                     for a in attempts],
    }


@routes.get("/notifications/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    principal = require(request)
    query = parse_query(request, DeliveryQuery)
    visible = _visible_recipients(principal)
    filters: dict[str, Any] = {}
    if query.recipient:
        if visible is not None and query.recipient not in visible:
            return json_response({"items": [], "next_cursor": None})
        filters["recipient_id"] = query.recipient
    elif visible is not None:
        if not visible:
            raise Problem(403, "forbidden", "this role has no deliveries to see")
        filters["recipient_id"] = {"$in": sorted(visible)}
    for field_name, key in (("status", "status"), ("type", "event_type"), ("channel", "channel"),
                            ("event_id", "event_id")):
        if getattr(query, field_name):
            filters[key] = getattr(query, field_name)
    after = None
    if query.cursor:
        after = decode_cursor(query.cursor)
        if not after or not after.startswith("dlv_"):
            raise Problem(400, "bad-cursor", "cursor is not one this service issued")
    repo = DeliveryRepository(request.app[MONGO])
    docs = await repo.page(filters, after, query.limit + 1)
    more = len(docs) > query.limit
    docs = docs[:query.limit]
    attempts = await repo.attempts_of([d["_id"] for d in docs])
    return json_response({"items": [_delivery_out(d, attempts.get(d["_id"], [])) for d in docs],
                          "next_cursor": encode_cursor(docs[-1]["_id"]) if more else None})


@routes.get("/notifications/deliveries/{delivery_id}")
async def get_delivery(request: web.Request) -> web.Response:
    principal = require(request)
    repo = DeliveryRepository(request.app[MONGO])
    doc = await request.app[MONGO].read_committed(lambda: repo.get(request.match_info["delivery_id"]))
    visible = _visible_recipients(principal)
    if doc is None or (visible is not None and doc["recipient_id"] not in visible):
        raise not_found("delivery")
    attempts = await repo.attempts_of([doc["_id"]])
    return json_response(_delivery_out(doc, attempts.get(doc["_id"], [])))


@routes.post("/notifications/deliveries/{delivery_id}/retry")
async def retry_delivery(request: web.Request) -> web.Response:
    """Send a failed delivery again (e.g. after a receiver was fixed), with a fresh retry budget."""
    require(request, "hq_admin")
    repo = DeliveryRepository(request.app[MONGO])

    async def unit(session):
        doc = await repo.get(request.match_info["delivery_id"], session)
        if doc is None:
            raise not_found("delivery")
        if doc["status"] != "failed":
            raise Problem(409, "not-failed", f"only a failed delivery can be retried; this one is {doc['status']}")
        if doc.get("reason", "").startswith("template-error"):
            raise Problem(409, "not-retryable", "the template failed to render; fix the template, the message "
                                                "was never composed")
        return await repo.save({**doc, "status": "pending", "due_at_ms": now_ms(), "reason": "manual-retry",
                                "budget_start": doc["attempt_count"], "updated_at": datetime.now(UTC)}, session)

    saved = await request.app[MONGO].transaction(unit)
    attempts = await repo.attempts_of([saved["_id"]])
    return json_response(_delivery_out(saved, attempts.get(saved["_id"], [])), status=202)


# --- preferences ---------------------------------------------------------------------------------------

class QuietHoursIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    timezone: str = Field(policy.DEFAULT_TIMEZONE, max_length=64)

    @field_validator("timezone")
    @classmethod
    def known_zone(cls, value: str) -> str:
        try:
            policy.QuietHours(time(0, 0), time(0, 0), value).zone()
        except policy.PreferenceError as exc:
            raise ValueError(str(exc)) from None
        return value


class PreferencesIn(BaseModel):
    """Partial update: fields left out keep their value. Transactional messages cannot be switched off."""
    model_config = ConfigDict(extra="forbid")
    channels: dict[PersonChannel, bool] | None = None
    categories: dict[Literal["service", "marketing"], bool] | None = None
    quiet_hours: QuietHoursIn | None = None
    daily_cap: int | None = Field(None, ge=0, le=100)


def _preferences_out(doc: dict) -> dict:
    return {"member_id": doc["_id"], "channels": {c: doc["channels"].get(c, True) for c in PERSON_CHANNELS},
            "categories": {"transactional": True, **{c: doc["categories"].get(c, True) for c in MEMBER_CATEGORIES}},
            "quiet_hours": doc.get("quiet_hours"), "daily_cap": doc["daily_cap"],
            "notes": {"transactional": "always sent", "marketing": "sent only with marketing consent",
                      "quiet_hours": "marketing is deferred to the end of quiet hours",
                      "daily_cap": "service and marketing messages per local day"}}


def _member_of(request: web.Request) -> str:
    principal = require(request)
    if not principal.member_id:
        raise Problem(403, "forbidden", "only a member has notification preferences")
    return principal.member_id


def _prefs_repo(request: web.Request) -> PreferenceRepository:
    return PreferenceRepository(request.app[MONGO], request.app[SETTINGS].default_daily_cap)


@routes.get("/notifications/members/{member_id}/preferences")
async def get_member_preferences(request: web.Request) -> web.Response:
    """Customer service looks at what a member chose (read only: only the member changes them)."""
    require(request, "hq_admin")
    member_id = request.match_info["member_id"]
    repo = _prefs_repo(request)
    return json_response(_preferences_out(await request.app[MONGO].read_committed(lambda: repo.get_doc(member_id))))


@routes.get("/notifications/me/preferences")
async def get_my_preferences(request: web.Request) -> web.Response:
    member_id = _member_of(request)
    repo = _prefs_repo(request)
    return json_response(_preferences_out(await request.app[MONGO].read_committed(lambda: repo.get_doc(member_id))))


@routes.put("/notifications/me/preferences")
@routes.patch("/notifications/me/preferences")
async def put_my_preferences(request: web.Request) -> web.Response:
    member_id = _member_of(request)
    body = await parse_body(request, PreferencesIn)
    given = body.model_dump(exclude_unset=True)
    repo = _prefs_repo(request)

    async def unit(session):
        doc = await repo.get_doc(member_id, session)
        if "channels" in given and given["channels"] is not None:
            doc["channels"] = {**doc["channels"], **given["channels"]}
        if "categories" in given and given["categories"] is not None:
            doc["categories"] = {**doc["categories"], **given["categories"]}
        if "quiet_hours" in given:
            doc["quiet_hours"] = given["quiet_hours"]
        if given.get("daily_cap") is not None:
            doc["daily_cap"] = given["daily_cap"]
        doc["updated_at"] = datetime.now(UTC)
        return await repo.save(doc, session)

    return json_response(_preferences_out(await request.app[MONGO].transaction(unit)))


# --- templates ---------------------------------------------------------------------------------------------

class TemplateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subject: str = Field("", max_length=templates.MAX_TEMPLATE_CHARS)
    body: str = Field(min_length=1, max_length=templates.MAX_TEMPLATE_CHARS)


class PreviewIn(TemplateIn):
    data: dict[str, Any] = Field(default_factory=dict)
    locale: str = "zh-CN"


def _template_out(doc: dict) -> dict:
    return {"type": doc["type"], "channel": doc["channel"], "locale": doc["locale"], "subject": doc["subject"],
            "body": doc["body"], "is_default": doc.get("is_default", False), "version": doc.get("version"),
            "updated_at": iso(doc.get("updated_at")), "updated_by": doc.get("updated_by")}


def _template_key(request: web.Request) -> tuple[str, str, str]:
    template_type = request.match_info["type"]
    channel = request.match_info["channel"]
    locale = request.match_info["locale"]
    if not is_template_type(template_type):
        raise Problem(404, "unknown-template-type",
                      f"{template_type!r} is neither a notified event type nor '{CAMPAIGN_PREFIX}<name>'")
    if channel not in (*PERSON_CHANNELS, SINK):
        raise Problem(404, "unknown-channel", f"channel must be one of {', '.join((*PERSON_CHANNELS, SINK))}")
    if locale not in LOCALES:
        raise Problem(404, "unknown-locale", f"locale must be one of {', '.join(LOCALES)}")
    return template_type, channel, locale


def _checked(subject: str, body: str, data: dict[str, Any] | None = None, locale: str = "zh-CN"):
    """Compile and trial-render in the sandbox; a template that cannot work is a 422, never stored."""
    try:
        templates.check(subject, body)
        return templates.render(subject, body, templates.context_for("preview", "evt_preview",
                                                                     iso(datetime.now(UTC)), data or {}, "",
                                                                     locale))
    except templates.TemplateProblem as exc:
        raise Problem(422, "invalid-template", str(exc)) from None


@routes.get("/notifications/templates")
async def list_templates(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    template_type = request.query.get("type")
    repo = TemplateRepository(request.app[MONGO])
    docs = await request.app[MONGO].read_committed(lambda: repo.list(template_type))
    return json_response({"items": [_template_out(d) for d in docs], "next_cursor": None})


@routes.get("/notifications/templates/{type}/{channel}/{locale}")
async def get_template(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    key = _template_key(request)
    repo = TemplateRepository(request.app[MONGO])
    doc = await request.app[MONGO].read_committed(lambda: repo.get(*key))
    if doc is None:
        raise not_found("template")
    return json_response(_template_out(doc))


@routes.put("/notifications/templates/{type}/{channel}/{locale}")
async def put_template(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    key = _template_key(request)
    body = await parse_body(request, TemplateIn)
    _checked(body.subject, body.body)
    repo = TemplateRepository(request.app[MONGO])
    doc = await request.app[MONGO].transaction(
        lambda s: repo.put(*key, body.subject, body.body, principal.subject, s))
    return json_response(_template_out(doc))


@routes.post("/notifications/templates/preview")
async def preview_template(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, PreviewIn)
    rendered = _checked(body.subject, body.body, body.data, policy.normalize_locale(body.locale))
    return json_response({"subject": rendered.subject, "body": rendered.body})


# --- webhooks ------------------------------------------------------------------------------------------------

class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: AnyHttpUrl
    event_types: list[str] = Field(min_length=1, max_length=len(WEBHOOK_EVENT_TYPES))
    secret: str | None = Field(None, min_length=16, max_length=200)
    description: str = Field("", max_length=500)

    @field_validator("event_types")
    @classmethod
    def known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(WEBHOOK_EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown or private event types: {', '.join(unknown)}")
        return sorted(set(value))


def _webhook_out(doc: dict, with_secret: bool = False) -> dict:
    out = {"id": doc["_id"], "url": doc["url"], "event_types": doc["event_types"], "active": doc["active"],
           "description": doc.get("description", ""), "created_at": iso(doc.get("created_at")),
           "signature": {"header": "X-O2O-Signature", "scheme": "t=<unix>,v1=<hex hmac-sha256(secret, t.body)>"}}
    if with_secret:
        out["secret"] = doc["secret"]
    return out


@routes.post("/notifications/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, WebhookIn)
    if not request.app[SETTINGS].webhooks_may_target_private:
        reason = private_target(str(body.url))
        if reason:
            raise Problem(422, "webhook-target-not-allowed", f"webhooks go to public receivers only: {reason}")
    mongo = request.app[MONGO]
    repo = WebhookRepository(mongo)

    async def create(remember):
        doc = {"_id": new_id("whk"), "url": str(body.url), "event_types": body.event_types,
               "secret": body.secret or "whsec_" + secrets.token_urlsafe(32), "active": True,
               "description": body.description, "created_by": principal.subject, "created_at": datetime.now(UTC)}
        out = _webhook_out(doc, with_secret=True)  # the secret is shown once, at creation

        async def unit(session):
            await repo.add(doc, session)
            await remember(session, 201, out)

        await mongo.transaction(unit)
        return 201, out

    return await guarded(mongo, request, create)


@routes.get("/notifications/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    docs = await WebhookRepository(request.app[MONGO]).list()
    return json_response({"items": [_webhook_out(d) for d in docs], "next_cursor": None})


@routes.delete("/notifications/webhooks/{webhook_id}")
async def delete_webhook(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    repo = WebhookRepository(request.app[MONGO])

    async def unit(session):
        doc = await repo.get(request.match_info["webhook_id"], session)
        if doc is None:
            raise not_found("webhook")
        if doc["active"]:
            await repo.save({**doc, "active": False, "deactivated_at": datetime.now(UTC)}, session)

    await request.app[MONGO].transaction(unit)
    return web.Response(status=204)


# --- campaigns ---------------------------------------------------------------------------------------------

class CampaignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
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


def _campaign_out(doc: dict) -> dict:
    return {"id": doc["_id"], "name": doc["name"], "tag": doc["tag"], "template": doc["template"],
            "channels": doc["channels"], "status": doc["status"], "members_seen": doc["members_seen"],
            "queued": doc["queued"], "suppressed": doc["suppressed"], "rate_per_s": doc["rate_per_s"],
            "created_at": iso(doc.get("created_at")), "finished_at": iso(doc.get("finished_at")),
            "last_error": doc.get("last_error")}


@routes.post("/notifications/campaigns")
async def create_campaign(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, CampaignIn)
    mongo, settings = request.app[MONGO], request.app[SETTINGS]
    template_repo = TemplateRepository(mongo)
    for channel in body.channels:
        stored = await mongo.read_committed(lambda: template_repo.get(body.template, channel, "zh-CN"))
        if stored is None and templates.default_for(body.template, channel, "zh-CN") is None:
            raise Problem(422, "template-missing",
                          f"no {body.template} template for {channel}; PUT it under /notifications/templates first")
    campaigns = CampaignRepository(mongo)

    async def create(remember):
        now = datetime.now(UTC)
        doc = {"_id": new_id("ncp"), "name": body.name, "tag": body.tag, "template": body.template,
               "channels": list(dict.fromkeys(body.channels)), "data": body.data, "status": "queued",
               "cursor": None, "members_seen": 0, "queued": 0, "suppressed": 0,
               "rate_per_s": settings.campaign_rate_per_s, "started_ms": now_ms(), "created_at": now,
               "created_by": principal.subject, "category": CAMPAIGN_RULE.category}
        out = _campaign_out(doc)

        async def unit(session):
            await campaigns.add(doc, session)
            await remember(session, 202, out)

        await mongo.transaction(unit)
        return 202, out

    return await guarded(mongo, request, create)


@routes.get("/notifications/campaigns/{campaign_id}")
async def get_campaign(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    repo = CampaignRepository(request.app[MONGO])
    doc = await request.app[MONGO].read_committed(lambda: repo.get(request.match_info["campaign_id"]))
    if doc is None:
        raise not_found("campaign")
    return json_response(_campaign_out(doc))


# --- recipients (staff and franchisee inboxes) and the outbound log ------------------------------------

class RecipientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    phone: str | None = Field(None, max_length=32, pattern=r"^\+?[0-9]{5,20}$")
    locale: str | None = Field(None, max_length=16)


def _recipient_kind(recipient_id: str) -> str:
    kind = recipient_id.split(":", 1)[0]
    if kind not in ("store", "franchisee") or ":" not in recipient_id:
        raise Problem(404, "unknown-recipient",
                      "contacts are set here for 'store:<location_id>' and 'franchisee:<id>' only; "
                      "member contacts come from membership")
    return kind


@routes.put("/notifications/recipients/{recipient_id}")
async def put_recipient(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    recipient_id = request.match_info["recipient_id"]
    kind = _recipient_kind(recipient_id)
    body = await parse_body(request, RecipientIn)
    fields = {"kind": kind, **body.model_dump(exclude_none=True)}
    if "locale" in fields:
        fields["locale"] = policy.normalize_locale(fields["locale"])
    directory = RecipientDirectory(request.app[MONGO])
    doc = await request.app[MONGO].transaction(lambda s: directory.upsert(recipient_id, fields, s))
    return json_response({"id": doc["_id"], **{k: doc.get(k) for k in ("kind", "name", "email", "phone", "locale")}})


class OutboundQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channel: Literal["sms", "wechat", "push", "email", "sink"] | None = None
    event_id: str | None = Field(None, max_length=100)
    address: str | None = Field(None, max_length=300)
    limit: int = Field(50, ge=1, le=500)


@routes.get("/notifications/outbound")
async def list_outbound(request: web.Request) -> web.Response:
    """What the sandbox channels (sms, wechat, push) and the local sink would have sent (dev and demo)."""
    require(request, "hq_admin")
    query = parse_query(request, OutboundQuery)
    filters = {k: v for k, v in (("channel", query.channel), ("event_id", query.event_id),
                                 ("address", query.address)) if v}
    docs = await OutboundLog(request.app[MONGO]).page(filters, query.limit)
    return json_response({"items": [{"delivery_id": d["delivery_id"], "channel": d["channel"],
                                     "address": d["address"], "subject": d["subject"], "body": d["body"],
                                     "locale": d["locale"], "event_id": d["event_id"], "event_type": d["event_type"],
                                     "sandbox": d.get("sandbox", True), "recorded_at": iso(d.get("recorded_at"))}
                                    for d in docs], "next_cursor": None})


@routes.get("/notifications/catalog")
async def event_catalog(request: web.Request) -> web.Response:
    """The event types a webhook may subscribe to, and what each notified event means to a person."""
    return json_response({"webhook_event_types": list(WEBHOOK_EVENT_TYPES), "channels": list(CHANNELS),
                          "categories": list(CATEGORIES), "locales": list(LOCALES),
                          "notified": {t: {"category": r.category, "audience": r.audience, "channels": list(r.channels)}
                                       for t, r in RULES.items()}})

