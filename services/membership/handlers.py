"""HTTP entrypoints: thin; they parse, check who is asking, call a use case and answer.

Public routes: /auth/... and /members/... (through the gateway as /api/v1/...). Internal routes for other
services: /members/internal/... (service role only; never routed by the gateway).
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from libs.auth import VERIFIER, Principal, require
from libs.http import json_response, parse_body, parse_query
from libs.idempotency import guarded
from libs.openapi import openapi
from libs.problems import Problem
from services.membership.domain.errors import MembershipError
from services.membership.domain.otp import normalize_phone
from services.membership.usecases import (Membership, attribution_of, public_campaign, public_member, public_qr,
                                         public_staff, public_template)

MEMBERSHIP = web.AppKey("membership", Membership)
routes = web.RouteTableDef()

STATUS_OF_KIND = {"invalid": 422, "conflict": 409, "unauthenticated": 401, "limited": 429, "not_found": 404}
MEMBER_ID = "{member_id:mbr_[A-Za-z0-9_]+}"
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Locale = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")]
# International format; spaces and dashes are tolerated and removed.
Phone = Annotated[str, StringConstraints(min_length=8, max_length=32, pattern=r"^\+[1-9][0-9 \-]{6,30}$")]


@web.middleware
async def domain_errors(request: web.Request, handler):
    """A domain refusal becomes a problem+json answer with a status that matches its kind."""
    try:
        return await handler(request)
    except MembershipError as exc:
        headers = {"Retry-After": str(exc.extensions["retry_after_s"])} if "retry_after_s" in exc.extensions else None
        if exc.kind == "unauthenticated":
            headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
        raise Problem(STATUS_OF_KIND.get(exc.kind, 422), exc.code, exc.detail, headers=headers,
                      **exc.extensions) from None


def membership(request: web.Request) -> Membership:
    return request.app[MEMBERSHIP]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# == answers (documented in the OpenAPI document) ================================================

class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    refresh_token: str | None = Field(None, description="members and staff: single use, see /auth/token/refresh")
    refresh_expires_in: int | None = None


class RefreshRequest(Strict):
    refresh_token: Annotated[str, StringConstraints(min_length=16, max_length=256)]


class OtpSent(BaseModel):
    phone: str
    expires_in: int
    dev_code: str | None = Field(None, description="only in dev mode")


class AttributionOut(BaseModel):
    member_id: str
    store_id: str | None
    staff_id: str | None
    campaign_id: str | None
    bound_until: str | None


class CouponOut(BaseModel):
    code: str
    template_id: str
    name: str | None
    state: Literal["issued", "locked", "redeemed", "expired"]
    kind: Literal["amount_off", "percent_off"]
    threshold: int
    amount_off: int | None
    percent_off: int | None
    max_off: int | None
    scope: dict
    channel: Literal["online", "in_store", "any"]
    valid_from: str
    valid_until: str
    campaign_id: str | None
    order_id: str | None


class CouponPage(BaseModel):
    items: list[CouponOut]
    next_cursor: str | None


class MemberOut(BaseModel):
    id: str
    status: str
    name: str | None
    phone: str | None
    email: str | None
    locale: str | None
    marketing_consent: bool
    tags: list[str]
    tier: str
    points_balance: int
    dormant: bool
    created_at: str | None
    attribution: AttributionOut
    identities: list[dict] = []


class MemberPage(BaseModel):
    items: list[MemberOut]
    next_cursor: str | None


class LedgerEntryOut(BaseModel):
    id: str
    kind: str
    amount: int
    order_id: str | None
    at: str
    expires_at: str | None


class PointsOut(BaseModel):
    member_id: str
    balance: int
    expiring_within_30_days: int
    items: list[LedgerEntryOut]
    next_cursor: str | None


class ScanOut(BaseModel):
    member_id: str
    created: bool
    bound_now: bool
    tags: list[str]
    attribution: AttributionOut
    coupons_issued: list[CouponOut]
    coupon_skipped: str | None


# == /auth =====================================================================================

class ServiceCredentials(Strict):
    client_id: Text
    client_secret: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class StaffCredentials(Strict):
    username: Text
    password: Annotated[str, StringConstraints(min_length=1, max_length=512)]


class OtpRequest(Strict):
    phone: Phone
    locale: Locale = "zh-CN"


class OtpLogin(Strict):
    phone: Phone
    code: Annotated[str, StringConstraints(pattern=r"^\d{4,8}$")]
    locale: Locale | None = None


@routes.get("/auth/jwks")
@openapi(summary="Public keys that verify every token (JWKS)", tags=["auth"], public=True)
async def jwks(request: web.Request) -> web.Response:
    return json_response(membership(request).keys.jwks(), headers={"Cache-Control": "public, max-age=60"})


@routes.post("/auth/service/token")
@openapi(summary="Service token (client credentials)", tags=["auth"], request=ServiceCredentials, response=TokenOut, public=True)
async def service_token(request: web.Request) -> web.Response:
    body = await parse_body(request, ServiceCredentials)
    return json_response(membership(request).service_token(body.client_id, body.client_secret),
                         headers={"Cache-Control": "no-store"})


@routes.post("/auth/staff/token")
@openapi(summary="Staff, manager, franchisee or HQ login", tags=["auth"], request=StaffCredentials, response=TokenOut, public=True)
async def staff_token(request: web.Request) -> web.Response:
    body = await parse_body(request, StaffCredentials)
    svc = membership(request)
    answer = await svc.staff_token(body.username, body.password)
    staff = await svc.mongo.read_committed(lambda: svc.staff.by_username(body.username))
    return json_response(await svc.with_refresh(answer, "staff", staff["_id"]), headers={"Cache-Control": "no-store"})


@routes.post("/auth/member/otp")
@openapi(summary="Send a one-time login code to a phone", tags=["auth"], request=OtpRequest, response=OtpSent, status=202, public=True)
async def member_otp(request: web.Request) -> web.Response:
    body = await parse_body(request, OtpRequest)
    return json_response(await membership(request).request_otp(body.phone, body.locale), status=202)


@routes.post("/auth/member/token")
@openapi(summary="Member login with phone and one-time code (registers a new member)", tags=["auth"], request=OtpLogin, response=TokenOut, public=True)
async def member_token(request: web.Request) -> web.Response:
    body = await parse_body(request, OtpLogin)
    svc = membership(request)
    answer, member_id, _created = await svc.login_with_code(body.phone, body.code, body.locale)
    return json_response(await svc.with_refresh(answer, "member", member_id), headers={"Cache-Control": "no-store"})


@routes.post("/auth/token/refresh")
@openapi(summary="A new access token for a refresh token (single use; reuse revokes the login)", tags=["auth"],
         request=RefreshRequest, response=TokenOut, public=True)
async def refresh_token(request: web.Request) -> web.Response:
    body = await parse_body(request, RefreshRequest)
    return json_response(await membership(request).refresh(body.refresh_token), headers={"Cache-Control": "no-store"})


@routes.post("/auth/logout")
@openapi(summary="End a login: its refresh tokens stop working", tags=["auth"], request=RefreshRequest,
         responses={204: None}, public=True)
async def logout(request: web.Request) -> web.Response:
    body = await parse_body(request, RefreshRequest)
    await membership(request).logout(body.refresh_token)
    return web.Response(status=204)


@routes.post("/auth/keys/rotate")
@openapi(summary="Rotate the signing key (the previous key stays published)", tags=["auth"])
async def rotate_keys(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    kid = await membership(request).keys.rotate()
    request.app[VERIFIER].load_jwks(membership(request).keys.jwks())
    return json_response({"kid": kid, "jwks": membership(request).keys.jwks()})


class PasswordChange(Strict):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    new_password: Annotated[str, StringConstraints(min_length=10, max_length=256)]


@routes.post("/auth/staff/password")
@openapi(summary="Change my staff password (ends my other logins)", tags=["auth"], request=PasswordChange,
         responses={204: None})
async def change_password(request: web.Request) -> web.Response:
    principal = require(request, "store_staff", "store_manager", "franchisee", "hq_admin")
    if not principal.staff_id:
        raise Problem(403, "forbidden", "this endpoint is for staff accounts")
    body = await parse_body(request, PasswordChange)
    await membership(request).change_staff_password(principal.staff_id, body.current_password, body.new_password)
    return web.Response(status=204)


# == /members/me ===============================================================================

def customer(request: web.Request) -> str:
    principal = require(request, "customer")
    if not principal.member_id:
        raise Problem(403, "forbidden", "this endpoint is for members")
    return principal.member_id


class ProfileChange(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=200)] | None = None
    locale: Locale | None = None
    marketing_consent: bool | None = None


class PageQuery(Strict):
    cursor: Annotated[str, StringConstraints(max_length=128)] | None = None
    limit: int = Field(50, ge=1, le=200)


class CouponQuery(Strict):
    state: Literal["issued", "locked", "redeemed", "expired"] | None = None


class PhoneLink(Strict):
    phone: Phone
    code: Annotated[str, StringConstraints(pattern=r"^\d{4,8}$")]


@routes.get("/members/me")
@openapi(summary="My member profile", tags=["members"], response=MemberOut)
async def me(request: web.Request) -> web.Response:
    return json_response(await membership(request).member_view(customer(request)))


@routes.patch("/members/me")
@openapi(summary="Change my profile and marketing consent", tags=["members"], request=ProfileChange, response=MemberOut)
async def update_me(request: web.Request) -> web.Response:
    member_id = customer(request)
    body = await parse_body(request, ProfileChange)
    return json_response(await membership(request).update_profile(member_id, body.model_dump(exclude_unset=True)))


@routes.get("/members/me/points")
@openapi(summary="My points balance and ledger", tags=["members"], query=PageQuery, response=PointsOut)
async def my_points(request: web.Request) -> web.Response:
    member_id = customer(request)
    query = parse_query(request, PageQuery)
    return json_response(await membership(request).points_view(member_id, query.cursor, query.limit))


@routes.get("/members/me/coupons")
@openapi(summary="My coupons", tags=["members"], query=CouponQuery, response=CouponPage)
async def my_coupons(request: web.Request) -> web.Response:
    member_id = customer(request)
    query = parse_query(request, CouponQuery)
    return json_response({"items": await membership(request).member_coupons(member_id, query.state),
                          "next_cursor": None})


@routes.post("/members/me/phone")
@openapi(summary="Verify a phone; merges with the member who already has it", tags=["members"], request=PhoneLink)
async def link_phone(request: web.Request) -> web.Response:
    """Verify a phone (with a one-time code); a phone already known as another member merges the two."""
    member_id = customer(request)
    body = await parse_body(request, PhoneLink)
    return json_response(await membership(request).link_phone(member_id, body.phone, body.code))


class IdentityLink(Strict):
    kind: Literal["wechat_openid", "wechat_unionid", "marketplace_buyer_id"]
    value: Annotated[str, StringConstraints(min_length=1, max_length=128)]


@routes.post("/members/me/identities")
@openapi(summary="Link a WeChat or marketplace identity to me", tags=["members"], request=IdentityLink,
         response=MemberOut)
async def link_identity(request: web.Request) -> web.Response:
    member_id = customer(request)
    body = await parse_body(request, IdentityLink)
    return json_response(await membership(request).link_identity(member_id, body.kind, body.value))


# == QR scans ==================================================================================

class Identity(Strict):
    kind: Literal["wechat_openid", "wechat_unionid", "marketplace_buyer_id"]
    value: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Scan(Strict):
    code: Id
    identity: Identity | None = None
    locale: Locale = "zh-CN"
    marketing_consent: bool | None = None


@routes.post("/members/scan")
@openapi(summary="Scan a store, assistant or campaign QR code", tags=["members"], request=Scan, responses={200: ScanOut, 201: ScanOut})
async def scan(request: web.Request) -> web.Response:
    """A shopper scanned a store's, an assistant's or a campaign's QR code.

    A logged-in member scans as themselves; an anonymous scan from the mini-program names the shopper's
    channel identity (e.g. WeChat openid) and registers them if new. A verified phone is never taken from an
    anonymous body: phones are verified by one-time code.
    """
    principal = request.get("principal")
    body = await parse_body(request, Scan)
    member_id = principal.member_id if principal is not None and principal.member_id else None
    if member_id is None and body.identity is None:
        raise Problem(401, "unauthorized", "log in as a member or name the scanning identity",
                      headers={"WWW-Authenticate": "Bearer"})

    async def create(remember):
        answer = await membership(request).scan(
            body.code, member_id=member_id,
            identity=(body.identity.kind, body.identity.value) if member_id is None else None,
            locale=body.locale, marketing_consent=body.marketing_consent, remember=remember)
        return (201 if answer["created"] else 200), answer

    return await guarded(membership(request).mongo, request, create)


# == internal: orders' checkout contract, attribution, campaign audiences ========================

class HoldLine(Strict):
    sku_id: Id
    category: Annotated[str, StringConstraints(max_length=100)] | None = None
    qty: int = Field(ge=1, le=10_000)
    unit_price: int = Field(ge=0, le=100_000_000)


class HoldRequest(Strict):
    order_id: Id
    member_id: Id
    channel: Literal["app", "mini_program", "marketplace", "store"]
    coupon_codes: list[Id] = Field(default_factory=list, max_length=10)
    points: int = Field(0, ge=0, le=100_000_000)
    lines: list[HoldLine] = Field(min_length=1, max_length=200)


class AudienceQuery(Strict):
    tag: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    store_id: Id | None = None
    cursor: Annotated[str, StringConstraints(max_length=128)] | None = None
    limit: int = Field(200, ge=1, le=1000)


@routes.post("/members/internal/checkout-holds")
async def create_hold(request: web.Request) -> web.Response:
    require(request, "service")
    body = await parse_body(request, HoldRequest)

    async def create(remember):
        answer = await membership(request).hold(body.order_id, body.member_id, body.channel, body.coupon_codes,
                                                body.points, [line.model_dump() for line in body.lines],
                                                remember=remember)
        return 201, answer

    return await guarded(membership(request).mongo, request, create)


@routes.post("/members/internal/checkout-holds/{order_id}/commit")
async def commit_hold(request: web.Request) -> web.Response:
    require(request, "service")
    return json_response(await membership(request).commit_hold(request.match_info["order_id"]))


@routes.post("/members/internal/checkout-holds/{order_id}/release")
async def release_hold(request: web.Request) -> web.Response:
    require(request, "service")
    return json_response(await membership(request).release_hold(request.match_info["order_id"]))


@routes.get("/members/internal/members/{member_id}/attribution")
async def attribution(request: web.Request) -> web.Response:
    require(request, "service")
    return json_response(attribution_of(await membership(request).get_member(request.match_info["member_id"])))


@routes.get("/members/internal/members")
async def audience(request: web.Request) -> web.Response:
    require(request, "service")
    query = parse_query(request, AudienceQuery)
    selector: dict = {"status": "active"}
    if query.tag:
        selector["tags"] = {"$in": [query.tag]}  # nx-27017: equality on an indexed array finds nothing; $in works
    if query.store_id:
        selector["bound_store_id"] = query.store_id
    svc = membership(request)
    docs = await svc.mongo.read_committed(lambda: svc.members.page(selector, query.cursor, query.limit + 1))
    more = len(docs) > query.limit
    docs = docs[:query.limit]
    return json_response({"items": [{"id": d["_id"], "phone": d.get("phone"), "email": d.get("email"),
                                     "locale": d.get("locale"), "marketing_consent": bool(d.get("marketing_consent")),
                                     "tier": d.get("tier")} for d in docs],
                          "next_cursor": docs[-1]["_id"] if more and docs else None})


# == staff and HQ ==============================================================================

STAFF_ROLES = ("store_staff", "store_manager", "hq_admin")


def can_see_member(principal: Principal, member: dict) -> bool:
    """HQ sees everyone; store staff see the members bound to their stores (others are 404, not 403)."""
    return principal.is_admin or (member.get("bound_store_id") in principal.store_ids)


async def visible_member(request: web.Request, roles=STAFF_ROLES) -> dict:
    principal = require(request, *roles)
    member = await membership(request).get_member(request.match_info["member_id"])
    if not can_see_member(principal, member):
        raise Problem(404, "member-not-found", "member not found")
    return member


class MemberSearch(Strict):
    tag: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    phone: Annotated[str, StringConstraints(max_length=32)] | None = None
    store_id: Id | None = None
    dormant: bool | None = None
    cursor: Annotated[str, StringConstraints(max_length=128)] | None = None
    limit: int = Field(50, ge=1, le=200)


@routes.get("/members")
@openapi(summary="Search members (staff see their stores' members)", tags=["members"], query=MemberSearch, response=MemberPage)
async def list_members(request: web.Request) -> web.Response:
    principal = require(request, *STAFF_ROLES)
    query = parse_query(request, MemberSearch)
    selector: dict = {"status": "active"}
    if query.tag:
        selector["tags"] = {"$in": [query.tag]}  # nx-27017: equality on an indexed array finds nothing; $in works
    if query.phone:
        selector["phone"] = normalize_phone(query.phone)
    if query.dormant is not None:
        selector["dormant"] = query.dormant
    if principal.is_admin:
        if query.store_id:
            selector["bound_store_id"] = query.store_id
    else:  # store staff see the members bound to their own stores only
        wanted = {query.store_id} if query.store_id else set(principal.store_ids)
        selector["bound_store_id"] = {"$in": sorted(wanted & principal.store_ids)}
    svc = membership(request)
    docs = await svc.mongo.read_committed(lambda: svc.members.page(selector, query.cursor, query.limit + 1))
    more = len(docs) > query.limit
    docs = docs[:query.limit]
    return json_response({"items": [public_member(d) for d in docs],
                          "next_cursor": docs[-1]["_id"] if more and docs else None})


@routes.get("/members/coupon-templates")
@openapi(summary="Coupon templates", tags=["coupons"])
async def list_templates(request: web.Request) -> web.Response:
    require(request, *STAFF_ROLES)
    svc = membership(request)
    docs = await svc.mongo.read_committed(svc.coupons.templates_list)
    return json_response({"items": [public_template(d) for d in docs], "next_cursor": None})


class Scope(Strict):
    type: Literal["all", "categories", "skus"] = "all"
    categories: list[Id] = Field(default_factory=list, max_length=100)
    skus: list[Id] = Field(default_factory=list, max_length=1000)


class NewTemplate(Strict):
    id: Id
    name: Text
    kind: Literal["amount_off", "percent_off"]
    threshold: int = Field(0, ge=0)
    amount_off: int | None = Field(None, ge=1)
    percent_off: int | None = Field(None, ge=1, le=99)
    max_off: int | None = Field(None, ge=1)
    scope: Scope = Field(default_factory=Scope)
    channel: Literal["online", "in_store", "any"] = "any"
    valid_days: int | None = Field(None, ge=1, le=3650)
    valid_from: str | None = None
    valid_until: str | None = None
    per_member_limit: int = Field(1, ge=1, le=1000)
    total_cap: int = Field(ge=1, le=100_000_000)

    @model_validator(mode="after")
    def _shape(self):
        if self.kind == "amount_off" and self.amount_off is None:
            raise ValueError("an amount_off template needs amount_off (fen)")
        if self.kind == "percent_off" and (self.percent_off is None or self.max_off is None):
            raise ValueError("a percent_off template needs percent_off and max_off (fen)")
        if self.valid_days is None and self.valid_until is None:
            raise ValueError("give valid_days or valid_until")
        return self


def template_doc(body: NewTemplate | dict) -> dict:
    t = body.model_dump() if isinstance(body, BaseModel) else dict(body)
    scope = t.get("scope") or {"type": "all"}
    values = scope.get("categories") or [] if scope["type"] == "categories" else scope.get("skus") or []
    return {"_id": t["id"], "name": t["name"], "kind": t["kind"], "threshold": t.get("threshold") or 0,
            "amount_off": t.get("amount_off"), "percent_off": t.get("percent_off"), "max_off": t.get("max_off"),
            "scope_type": scope["type"], "scope_values": values if scope["type"] != "all" else [],
            "channel": t.get("channel", "any"), "valid_days": t.get("valid_days"),
            "valid_from_ms": _ms(t.get("valid_from")), "valid_until_ms": _ms(t.get("valid_until")),
            "per_member_limit": t.get("per_member_limit", 1), "total_cap": t["total_cap"], "status": "active"}


def _ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise Problem(422, "validation-error", f"not an RFC 3339 time: {value}") from None


@routes.post("/members/coupon-templates")
@openapi(summary="Create a coupon template", tags=["coupons"], request=NewTemplate, status=201)
async def create_template(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, NewTemplate)

    async def create(remember):
        return 201, await membership(request).create_template(template_doc(body), remember=remember)

    return await guarded(membership(request).mongo, request, create)


class NewCampaign(Strict):
    id: Id
    name: Text
    tag: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    coupon_template_id: Id | None = None


@routes.get("/members/campaigns")
@openapi(summary="Campaigns", tags=["campaigns"])
async def list_campaigns(request: web.Request) -> web.Response:
    require(request, *STAFF_ROLES)
    svc = membership(request)
    docs = await svc.mongo.read_committed(svc.coupons.campaigns_list)
    return json_response({"items": [public_campaign(d) for d in docs], "next_cursor": None})


@routes.post("/members/campaigns")
@openapi(summary="Create a campaign (tag + coupon template)", tags=["campaigns"], request=NewCampaign, status=201)
async def create_campaign(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, NewCampaign)
    doc = {"_id": body.id, "name": body.name, "tag": body.tag, "coupon_template_id": body.coupon_template_id,
           "status": "active"}

    async def create(remember):
        return 201, await membership(request).create_campaign(doc, remember=remember)

    return await guarded(membership(request).mongo, request, create)


class NewQr(Strict):
    code: Id
    kind: Literal["store", "staff", "campaign"]
    store_id: Id | None = None
    staff_id: Id | None = None
    campaign_id: Id | None = None

    @model_validator(mode="after")
    def _shape(self):
        if self.kind in ("store", "staff") and not self.store_id:
            raise ValueError(f"a {self.kind} QR code needs store_id")
        if self.kind == "staff" and not self.staff_id:
            raise ValueError("a staff QR code needs staff_id")
        if self.kind == "campaign" and not self.campaign_id:
            raise ValueError("a campaign QR code needs campaign_id")
        return self


class QrQuery(Strict):
    store_id: Id | None = None


@routes.get("/members/qr-codes")
@openapi(summary="QR codes", tags=["campaigns"], query=QrQuery)
async def list_qr(request: web.Request) -> web.Response:
    principal = require(request, *STAFF_ROLES)
    query = parse_query(request, QrQuery)
    if not principal.is_admin and query.store_id is not None and query.store_id not in principal.store_ids:
        return json_response({"items": [], "next_cursor": None})
    svc = membership(request)
    docs = await svc.mongo.read_committed(lambda: svc.coupons.qr_list(query.store_id))
    docs = [d for d in docs if principal.is_admin or d.get("store_id") in principal.store_ids]
    return json_response({"items": [public_qr(d) for d in docs], "next_cursor": None})


@routes.post("/members/qr-codes")
@openapi(summary="Create a store, staff or campaign QR code", tags=["campaigns"], request=NewQr, status=201)
async def create_qr(request: web.Request) -> web.Response:
    principal = require(request, "store_manager", "hq_admin")
    body = await parse_body(request, NewQr)
    if not principal.is_admin and (body.store_id is None or body.store_id not in principal.store_ids):
        raise Problem(403, "forbidden", "store managers create QR codes for their own store only")
    doc = {"_id": body.code, "kind": body.kind, "store_id": body.store_id, "staff_id": body.staff_id,
           "campaign_id": body.campaign_id, "status": "active"}

    async def create(remember):
        return 201, await membership(request).create_qr(doc, remember=remember)

    return await guarded(membership(request).mongo, request, create)


class NewStaff(Strict):
    id: Annotated[str, StringConstraints(pattern=r"^stf_[A-Za-z0-9_]{1,60}$")]
    username: Annotated[str, StringConstraints(pattern=r"^[a-z0-9._-]{3,64}$")]
    password: Annotated[str, StringConstraints(min_length=10, max_length=256)]
    name: Text
    roles: list[Literal["store_staff", "store_manager", "franchisee", "hq_admin"]] = Field(min_length=1, max_length=4)
    store_ids: list[Id] = Field(default_factory=list, max_length=500)
    franchisee_id: Id | None = None

    @model_validator(mode="after")
    def _shape(self):
        if {"store_staff", "store_manager"} & set(self.roles) and not self.store_ids:
            raise ValueError("store staff and managers need at least one store_id")
        if "franchisee" in self.roles and not self.franchisee_id:
            raise ValueError("a franchisee account needs franchisee_id")
        return self


@routes.get("/members/staff")
@openapi(summary="Staff accounts (HQ)", tags=["staff"])
async def list_staff(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    svc = membership(request)
    docs = await svc.mongo.read_committed(svc.staff.list)
    return json_response({"items": [public_staff(d) for d in docs], "next_cursor": None})


@routes.post("/members/staff")
@openapi(summary="Create a staff account (HQ)", tags=["staff"], request=NewStaff, status=201)
async def create_staff(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, NewStaff)
    doc = {"_id": body.id, "username": body.username, "name": body.name, "roles": sorted(set(body.roles)),
           "store_ids": sorted(set(body.store_ids)), "franchisee_id": body.franchisee_id}

    async def create(remember):
        return 201, await membership(request).create_staff(doc, body.password, remember=remember)

    return await guarded(membership(request).mongo, request, create)


@routes.get("/members/stores/{store_id}/analytics")
@openapi(summary="Store acquisition analytics", tags=["analytics"])
async def store_analytics(request: web.Request) -> web.Response:
    principal = require(request, "store_manager", "franchisee", "hq_admin")
    store_id = request.match_info["store_id"]
    if not principal.can_see_store(store_id):
        raise Problem(404, "not-found", "store not found")
    return json_response(await membership(request).store_analytics(store_id))


class Merge(Strict):
    member_id: Id
    other_member_id: Id


@routes.post("/members/merges")
@openapi(summary="Merge two members (HQ)", tags=["members"], request=Merge)
async def merge_members(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, Merge)

    async def create(remember):
        return 200, await membership(request).merge(body.member_id, body.other_member_id, reason="hq",
                                                    remember=remember)

    return await guarded(membership(request).mongo, request, create)


@routes.get(f"/members/{MEMBER_ID}")
@openapi(summary="A member", tags=["members"], response=MemberOut)
async def get_member(request: web.Request) -> web.Response:
    member = await visible_member(request)
    return json_response(await membership(request).member_view(member["_id"]))


@routes.get(f"/members/{MEMBER_ID}/analytics")
@openapi(summary="A member's purchase analytics", tags=["analytics"])
async def member_analytics(request: web.Request) -> web.Response:
    member = await visible_member(request)
    return json_response(await membership(request).member_analytics(member["_id"]))


@routes.get(f"/members/{MEMBER_ID}/coupons")
@openapi(summary="A member's coupons", tags=["coupons"], response=CouponPage)
async def member_coupons(request: web.Request) -> web.Response:
    member = await visible_member(request)
    return json_response({"items": await membership(request).member_coupons(member["_id"]), "next_cursor": None})


class IssueCoupon(Strict):
    template_id: Id


@routes.post(f"/members/{MEMBER_ID}/coupons")
@openapi(summary="Issue a coupon to a member", tags=["coupons"], request=IssueCoupon, response=CouponOut, status=201)
async def issue_coupon(request: web.Request) -> web.Response:
    member = await visible_member(request, roles=("store_manager", "hq_admin"))
    body = await parse_body(request, IssueCoupon)

    async def create(remember):
        return 201, await membership(request).issue_coupon(member["_id"], body.template_id, remember=remember)

    return await guarded(membership(request).mongo, request, create)


class PointsAdjustment(Strict):
    delta: int = Field(ge=-10_000_000, le=10_000_000)
    note: Text

    @model_validator(mode="after")
    def _non_zero(self):
        if self.delta == 0:
            raise ValueError("delta cannot be 0")
        return self


@routes.post(f"/members/{MEMBER_ID}/points/adjustments")
@openapi(summary="Adjust a member's points (HQ)", tags=["points"], request=PointsAdjustment, status=201)
async def adjust_points(request: web.Request) -> web.Response:
    member = await visible_member(request, roles=("hq_admin",))
    body = await parse_body(request, PointsAdjustment)

    async def create(remember):
        return 201, await membership(request).adjust_points(member["_id"], body.delta, body.note, remember=remember)

    return await guarded(membership(request).mongo, request, create)


@routes.get(f"/members/{MEMBER_ID}/points")
@openapi(summary="A member's points and ledger", tags=["points"], query=PageQuery, response=PointsOut)
async def member_points(request: web.Request) -> web.Response:
    member = await visible_member(request)
    query = parse_query(request, PageQuery)
    return json_response(await membership(request).points_view(member["_id"], query.cursor, query.limit))
