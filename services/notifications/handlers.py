"""HTTP entrypoints of notifications: thin, they check the caller, parse, call one use case and answer."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from aiohttp import web

from libs.auth import require
from libs.http import json_response, parse_body, parse_query
from libs.idempotency import create_once
from libs.openapi import openapi
from libs.refusal import FORBIDDEN
from libs.service import MONGO
from services.notifications.domain import policy
from services.notifications.domain.errors import NotificationError
from services.notifications.domain.rules import event_catalog
from services.notifications.schemas import (
    CampaignIn, CampaignOut, DeliveryOut, DeliveryPage, DeliveryQuery, EventCatalogOut, OutboundPage, OutboundQuery,
    PreferencesIn, PreferencesOut, PreviewIn, RecipientIn, RecipientOut, RenderedOut, TemplateIn, TemplateOut,
    TemplatePage, TemplateQuery, WebhookCreated, WebhookIn, WebhookPage,
)
from services.notifications.usecases import CAMPAIGNS, DELIVERY_LOG, DIRECTORY, PREFERENCES, TEMPLATES, WEBHOOKS
from services.notifications.usecases.directory import inbox_kind
from services.notifications.usecases.templates import template_key, trial_render
from services.notifications.views import (
    campaign_view, delivery_view, outbound_view, preferences_view, recipient_view, template_view, webhook_view,
)

routes = web.RouteTableDef()
TAGS = ["notifications"]


async def _created_once(request: web.Request, create: Callable[[], Awaitable[dict]], status: int,
                        view: Callable[[dict], dict]) -> web.Response:
    """Create once per Idempotency-Key: a replay answers the stored response, a refusal stores nothing."""

    async def answer() -> tuple[int, dict]:
        return status, view(await create())

    return await create_once(request.app[MONGO], request, answer)


def _listing(docs: list[dict], view: Callable[[dict], dict]) -> web.Response:
    """A whole (short) list in the shape of every list: these lists fit in one page, so no cursor."""
    return json_response({"items": [view(d) for d in docs], "next_cursor": None})


# --- delivery log ------------------------------------------------------------------------------------

@routes.get("/notifications/deliveries")
@openapi(summary="Deliveries the caller may see, newest first", query=DeliveryQuery, response=DeliveryPage,
         tags=TAGS)
async def list_deliveries(request: web.Request) -> web.Response:
    principal = require(request)
    query = parse_query(request, DeliveryQuery)
    page, attempts = await request.app[DELIVERY_LOG].page(principal, query.filters(), query.recipient, query.limit,
                                                          query.cursor)
    return json_response({"items": [delivery_view(d, attempts.get(d["_id"], [])) for d in page["items"]],
                          "next_cursor": page["next_cursor"]})


@routes.get("/notifications/deliveries/{delivery_id}")
@openapi(summary="One delivery with its attempts", response=DeliveryOut, tags=TAGS)
async def get_delivery(request: web.Request) -> web.Response:
    principal = require(request)
    doc, attempts = await request.app[DELIVERY_LOG].get(principal, request.match_info["delivery_id"])
    return json_response(delivery_view(doc, attempts))


@routes.post("/notifications/deliveries/{delivery_id}/retry")
@openapi(summary="Send a failed delivery again, with a fresh retry budget", response=DeliveryOut, status=202,
         tags=TAGS)
async def retry_delivery(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    doc, attempts = await request.app[DELIVERY_LOG].retry(request.match_info["delivery_id"])
    return json_response(delivery_view(doc, attempts), status=202)


# --- preferences ---------------------------------------------------------------------------------------

def _member_of(request: web.Request) -> str:
    principal = require(request)
    if not principal.member_id:
        raise NotificationError("forbidden", "only a member has notification preferences", kind=FORBIDDEN)
    return principal.member_id


@routes.get("/notifications/members/{member_id}/preferences")
@openapi(summary="A member's preferences (customer service; read only)", response=PreferencesOut, tags=TAGS)
async def get_member_preferences(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    return json_response(preferences_view(await request.app[PREFERENCES].get(request.match_info["member_id"])))


@routes.get("/notifications/me/preferences")
@openapi(summary="My notification preferences", response=PreferencesOut, tags=TAGS)
async def get_my_preferences(request: web.Request) -> web.Response:
    return json_response(preferences_view(await request.app[PREFERENCES].get(_member_of(request))))


@routes.put("/notifications/me/preferences")
@routes.patch("/notifications/me/preferences")
@openapi(summary="Change my preferences (fields left out keep their value)", request=PreferencesIn,
         response=PreferencesOut, tags=TAGS)
async def put_my_preferences(request: web.Request) -> web.Response:
    member_id = _member_of(request)
    given = (await parse_body(request, PreferencesIn)).changes()
    return json_response(preferences_view(await request.app[PREFERENCES].change(member_id, given)))


# --- templates ---------------------------------------------------------------------------------------------

def _template_path(request: web.Request) -> tuple[str, str, str]:
    return template_key(request.match_info["type"], request.match_info["channel"], request.match_info["locale"])


@routes.get("/notifications/templates")
@openapi(summary="Stored templates", query=TemplateQuery, response=TemplatePage, tags=TAGS)
async def list_templates(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    query = parse_query(request, TemplateQuery)
    return _listing(await request.app[TEMPLATES].list(query.type), template_view)


@routes.get("/notifications/templates/{type}/{channel}/{locale}")
@openapi(summary="One template", response=TemplateOut, tags=TAGS)
async def get_template(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    return json_response(template_view(await request.app[TEMPLATES].get(*_template_path(request))))


@routes.put("/notifications/templates/{type}/{channel}/{locale}")
@openapi(summary="Edit a template (checked in the sandbox before it is stored)", request=TemplateIn,
         response=TemplateOut, tags=TAGS)
async def put_template(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    key = _template_path(request)
    body = await parse_body(request, TemplateIn)
    doc = await request.app[TEMPLATES].put(*key, body.subject, body.body, principal.subject)
    return json_response(template_view(doc))


@routes.post("/notifications/templates/preview")
@openapi(summary="Render a template with sample data", request=PreviewIn, response=RenderedOut, tags=TAGS)
async def preview_template(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, PreviewIn)
    rendered = trial_render(body.subject, body.body, body.data, policy.normalize_locale(body.locale))
    return json_response({"subject": rendered.subject, "body": rendered.body})


# --- webhooks ------------------------------------------------------------------------------------------------

@routes.post("/notifications/webhooks")
@openapi(summary="Subscribe a receiver to events (Idempotency-Key honoured; the secret is shown once)",
         request=WebhookIn, response=WebhookCreated, status=201, tags=TAGS)
async def create_webhook(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, WebhookIn)
    subscribe = partial(request.app[WEBHOOKS].subscribe, str(body.url), body.event_types, body.secret,
                        body.description, principal.subject)
    return await _created_once(request, subscribe, 201, partial(webhook_view, with_secret=True))


@routes.get("/notifications/webhooks")
@openapi(summary="Webhook subscriptions", response=WebhookPage, tags=TAGS)
async def list_webhooks(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    return _listing(await request.app[WEBHOOKS].list(), webhook_view)


@routes.delete("/notifications/webhooks/{webhook_id}")
@openapi(summary="Deactivate a subscription", responses={204: None}, tags=TAGS)
async def delete_webhook(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    await request.app[WEBHOOKS].unsubscribe(request.match_info["webhook_id"])
    return web.Response(status=204)


# --- campaigns ---------------------------------------------------------------------------------------------

@routes.post("/notifications/campaigns")
@openapi(summary="Send a marketing message to the members with a tag (Idempotency-Key honoured)",
         request=CampaignIn, response=CampaignOut, status=202, tags=TAGS)
async def create_campaign(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin")
    body = await parse_body(request, CampaignIn)
    start = partial(request.app[CAMPAIGNS].start, body.name, body.tag, body.template, body.channels, body.data,
                    principal.subject)
    return await _created_once(request, start, 202, campaign_view)


@routes.get("/notifications/campaigns/{campaign_id}")
@openapi(summary="A campaign and its progress", response=CampaignOut, tags=TAGS)
async def get_campaign(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    campaign = await request.app[CAMPAIGNS].get(request.match_info["campaign_id"])
    return json_response(campaign_view(campaign))


# --- recipients (staff and franchisee inboxes), the outbound log, the event catalog -------------------

@routes.put("/notifications/recipients/{recipient_id}")
@openapi(summary="Contact of a store or franchisee inbox ('store:<id>', 'franchisee:<id>')", request=RecipientIn,
         response=RecipientOut, tags=TAGS)
async def put_recipient(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    recipient_id = request.match_info["recipient_id"]
    inbox_kind(recipient_id)  # an unknown recipient is a 404 whatever the body says
    body = await parse_body(request, RecipientIn)
    doc = await request.app[DIRECTORY].put_inbox_contact(recipient_id, body.model_dump(exclude_none=True))
    return json_response(recipient_view(doc))


@routes.get("/notifications/outbound")
@openapi(summary="What the sandbox channels and the sink recorded", query=OutboundQuery, response=OutboundPage,
         description="Dev and demo: what sms, wechat and push would have sent, and the local sink's copies.",
         tags=TAGS)
async def list_outbound(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    query = parse_query(request, OutboundQuery)
    return _listing(await request.app[DELIVERY_LOG].outbound(query.filters(), query.limit), outbound_view)


@routes.get("/notifications/catalog")
@openapi(summary="Event types a webhook may subscribe to, and what each notified event means to a person",
         response=EventCatalogOut, tags=TAGS)
async def get_event_catalog(request: web.Request) -> web.Response:
    return json_response(event_catalog())
