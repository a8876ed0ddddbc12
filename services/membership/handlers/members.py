"""/members: my profile, phone and identities; QR scans and codes; staff search; merges; attribution and
campaign audiences for other services (internal)."""
from __future__ import annotations

from aiohttp import web

from libs.auth import require
from libs.http import json_response, parse_body, parse_query
from libs.openapi import openapi
from libs.problems import Problem
from services.membership.handlers.common import (MEMBER_ID, STAFF_ROLES, body_for, customer, listing, my_body, once,
                                                 visible_member)
from services.membership.schemas import (AttributionQuery, AudienceQuery, Identity, Merge, MemberOut, MemberPage, MemberSearch, NewQr,
                                         PhoneLink, ProfileChange, QrQuery, Scan, ScanOut)
from services.membership.usecases import MEMBERS, MERGES, QR_CODES, SCANS

routes = web.RouteTableDef()


@routes.get("/members/me")
@openapi(summary="My member profile", tags=["members"], response=MemberOut)
async def me(request: web.Request) -> web.Response:
    return json_response(await request.app[MEMBERS].view(customer(request)))


@routes.patch("/members/me")
@openapi(summary="Change my profile and marketing consent", tags=["members"], request=ProfileChange,
         response=MemberOut)
async def update_me(request: web.Request) -> web.Response:
    member_id, body = await my_body(request, ProfileChange)
    return json_response(await request.app[MEMBERS].update_profile(member_id, body.model_dump(exclude_unset=True)))


@routes.post("/members/me/phone")
@openapi(summary="Verify a phone; merges with the member who already has it", tags=["members"], request=PhoneLink)
async def link_phone(request: web.Request) -> web.Response:
    """Verify a phone (with a one-time code); a phone already known as another member merges the two."""
    member_id, body = await my_body(request, PhoneLink)
    return json_response(await request.app[MERGES].link_phone(member_id, body.phone, body.code))


@routes.post("/members/me/identities")
@openapi(summary="Link a WeChat or marketplace identity to me", tags=["members"], request=Identity,
         response=MemberOut)
async def link_identity(request: web.Request) -> web.Response:
    member_id, body = await my_body(request, Identity)
    return json_response(await request.app[MEMBERS].link_identity(member_id, body.kind, body.value))


@routes.post("/members/scan")
@openapi(summary="Scan a store, assistant or campaign QR code", tags=["members"], request=Scan,
         responses={200: ScanOut, 201: ScanOut})
async def scan(request: web.Request) -> web.Response:
    """A shopper scanned a store's, an assistant's or a campaign's QR code.

    A logged-in member scans as themselves (and gets a scan token for their checkout); staff at a counter
    (or an internal service) may name the shopper's channel identity (e.g. WeChat openid), which registers
    them if new: counted per staff member, audited, no consent change and no campaign coupon. A verified
    phone is never taken from a body: phones are verified by one-time code.
    """
    principal = request.get("principal")
    body = await parse_body(request, Scan)
    member_id = principal.member_id if principal is not None and principal.member_id else None
    names_identity = principal is not None and principal.has(*STAFF_ROLES, "service")
    if member_id is None and (body.identity is None or not names_identity):
        raise Problem(401, "unauthorized", "log in as a member; only staff name a shopper's identity",
                      headers={"WWW-Authenticate": "Bearer"})
    identity = (body.identity.kind, body.identity.value) if member_id is None else None
    staff_id = None if member_id else (principal.staff_id or principal.subject)
    return await once(request, lambda: request.app[SCANS].scan(
        body.code, member_id=member_id, identity=identity, locale=body.locale,
        marketing_consent=body.marketing_consent, staff_id=staff_id),
        status=lambda answer: 201 if answer["created"] else 200)


@routes.get("/members")
@openapi(summary="Search members (staff see their stores' members)", tags=["members"], query=MemberSearch,
         response=MemberPage)
async def list_members(request: web.Request) -> web.Response:
    principal = require(request, *STAFF_ROLES)
    query = parse_query(request, MemberSearch)
    if principal.is_admin:
        stores = [query.store_id] if query.store_id else None
    else:  # store staff see the members bound to their own stores only
        wanted = {query.store_id} if query.store_id else set(principal.store_ids)
        stores = sorted(wanted & principal.store_ids)
    return json_response(await request.app[MEMBERS].search(
        stores=stores, tag=query.tag, phone=query.phone, dormant=query.dormant, cursor=query.cursor,
        limit=query.limit))


@routes.get(f"/members/{MEMBER_ID}")
@openapi(summary="A member", tags=["members"], response=MemberOut)
async def get_member(request: web.Request) -> web.Response:
    member = await visible_member(request)
    return json_response(await request.app[MEMBERS].view(member["_id"]))


@routes.post("/members/merges")
@openapi(summary="Merge two members (HQ)", tags=["members"], request=Merge)
async def merge_members(request: web.Request) -> web.Response:
    body = await body_for(request, Merge, "hq_admin")
    return await once(request, lambda: request.app[MERGES].merge(body.member_id, body.other_member_id, reason="hq"),
                      status=lambda answer: 200)


@routes.get("/members/qr-codes")
@openapi(summary="QR codes", tags=["campaigns"], query=QrQuery)
async def list_qr(request: web.Request) -> web.Response:
    # Orders reads them to attribute a scanned sale.
    principal = require(request, *STAFF_ROLES, scope="membership:qr-codes")
    query = parse_query(request, QrQuery)
    if principal.is_service:
        return json_response(listing(await request.app[QR_CODES].list(query.store_id, None)))
    if not principal.is_admin and query.store_id is not None and query.store_id not in principal.store_ids:
        return json_response(listing([]))
    stores = None if principal.is_admin else set(principal.store_ids)
    return json_response(listing(await request.app[QR_CODES].list(query.store_id, stores)))


@routes.post("/members/qr-codes")
@openapi(summary="Create a store, staff or campaign QR code", tags=["campaigns"], request=NewQr, status=201)
async def create_qr(request: web.Request) -> web.Response:
    principal = require(request, "store_manager", "hq_admin")
    body = await parse_body(request, NewQr)
    if not principal.is_admin and (body.store_id is None or body.store_id not in principal.store_ids):
        raise Problem(403, "forbidden", "store managers create QR codes for their own store only")
    doc = {"_id": body.code, "kind": body.kind, "store_id": body.store_id, "staff_id": body.staff_id,
           "campaign_id": body.campaign_id, "status": "active"}
    return await once(request, lambda: request.app[QR_CODES].create(doc))


# == internal: attribution for orders, campaign audiences for notifications =========================

@routes.get("/members/internal/members")
async def audience(request: web.Request) -> web.Response:
    require(request, scope="membership:audiences")
    query = parse_query(request, AudienceQuery)
    return json_response(await request.app[MEMBERS].audience(tag=query.tag, store_id=query.store_id,
                                                             cursor=query.cursor, limit=query.limit))


@routes.get("/members/internal/members/{member_id}/attribution")
async def attribution(request: web.Request) -> web.Response:
    """Who the member is bound to, for orders to credit the sale (nulls when unbound); with `scan_token`, the
    QR this member scanned (`scan`, null unless the token is theirs and fresh)."""
    require(request, scope="membership:attribution")
    query = parse_query(request, AttributionQuery)
    return json_response(await request.app[MEMBERS].attribution(request.match_info["member_id"], query.scan_token))
