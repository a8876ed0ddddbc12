"""/members coupons: templates and campaigns (HQ), my and a member's coupons, issuing; orders' checkout holds
(internal)."""
from __future__ import annotations

from aiohttp import web

from libs.auth import require
from libs.http import json_response, parse_body, parse_query
from libs.openapi import openapi
from services.membership.handlers.common import (MEMBER_ID, STAFF_ROLES, body_for, customer, listing, once, short_list,
                                                 visible_member)
from services.membership.schemas import (CouponOut, CouponPage, CouponQuery, HoldRequest, IssueCoupon, NewCampaign,
                                         NewTemplate)
from services.membership.usecases import CHECKOUT_HOLDS, COUPONS, template_doc

routes = web.RouteTableDef()


short_list(routes, "/members/coupon-templates", "list_templates", summary="Coupon templates", tags=["coupons"],
           roles=STAFF_ROLES, items=lambda app: app[COUPONS].templates())
short_list(routes, "/members/campaigns", "list_campaigns", summary="Campaigns", tags=["campaigns"],
           roles=STAFF_ROLES, items=lambda app: app[COUPONS].campaigns())


@routes.post("/members/coupon-templates")
@openapi(summary="Create a coupon template", tags=["coupons"], request=NewTemplate, status=201)
async def create_template(request: web.Request) -> web.Response:
    doc = template_doc((await body_for(request, NewTemplate, "hq_admin")).model_dump())
    return await once(request, lambda: request.app[COUPONS].create_template(doc))


@routes.post("/members/campaigns")
@openapi(summary="Create a campaign (tag + coupon template)", tags=["campaigns"], request=NewCampaign, status=201)
async def create_campaign(request: web.Request) -> web.Response:
    body = await body_for(request, NewCampaign, "hq_admin")
    doc = {"_id": body.id, "name": body.name, "tag": body.tag, "coupon_template_id": body.coupon_template_id,
           "status": "active"}
    return await once(request, lambda: request.app[COUPONS].create_campaign(doc))


@routes.get("/members/me/coupons")
@openapi(summary="My coupons", tags=["members"], query=CouponQuery, response=CouponPage)
async def my_coupons(request: web.Request) -> web.Response:
    member_id = customer(request)
    query = parse_query(request, CouponQuery)
    return json_response(listing(await request.app[COUPONS].wallet(member_id, query.state)))


@routes.get(f"/members/{MEMBER_ID}/coupons")
@openapi(summary="A member's coupons", tags=["coupons"], response=CouponPage)
async def member_coupons(request: web.Request) -> web.Response:
    member = await visible_member(request)
    return json_response(listing(await request.app[COUPONS].wallet(member["_id"])))


@routes.post(f"/members/{MEMBER_ID}/coupons")
@openapi(summary="Issue a coupon to a member", tags=["coupons"], request=IssueCoupon, response=CouponOut,
         status=201)
async def issue_coupon(request: web.Request) -> web.Response:
    member = await visible_member(request, roles=("store_manager", "hq_admin"))
    body = await parse_body(request, IssueCoupon)
    return await once(request, lambda: request.app[COUPONS].issue(member["_id"], body.template_id))


# == internal: orders' checkout contract =============================================================

@routes.post("/members/internal/checkout-holds")
async def create_hold(request: web.Request) -> web.Response:
    require(request, scope="membership:checkout-holds")
    body = await parse_body(request, HoldRequest)
    lines = [line.model_dump() for line in body.lines]
    return await once(request, lambda: request.app[CHECKOUT_HOLDS].hold(
        body.order_id, body.member_id, body.channel, body.coupon_codes, body.points, lines, body.ttl_s))


@routes.post("/members/internal/checkout-holds/{order_id}/{step:commit|release}")
async def settle_hold(request: web.Request) -> web.Response:
    """The order was paid (commit: coupons redeemed) or cancelled (release: coupons and points back).

    A release of an order that holds nothing is sticky: that order's later hold is refused (409 hold-released)."""
    require(request, scope="membership:checkout-holds")
    holds, order_id = request.app[CHECKOUT_HOLDS], request.match_info["order_id"]
    step = holds.commit if request.match_info["step"] == "commit" else holds.release
    return json_response(await step(order_id))
