"""/members points and analytics: my points, a member's points and HQ adjustments, member and store analytics."""
from __future__ import annotations

from aiohttp import web

from libs.auth import require
from libs.http import json_response, parse_body, parse_query
from libs.openapi import openapi
from libs.problems import Problem
from services.membership.handlers.common import MEMBER_ID, customer, once, visible_member
from services.membership.schemas import PageQuery, PointsAdjustment, PointsOut
from services.membership.usecases import ANALYTICS, POINTS

routes = web.RouteTableDef()


@routes.get("/members/me/points")
@openapi(summary="My points balance and ledger", tags=["members"], query=PageQuery, response=PointsOut)
async def my_points(request: web.Request) -> web.Response:
    member_id = customer(request)
    query = parse_query(request, PageQuery)
    return json_response(await request.app[POINTS].view(member_id, query.cursor, query.limit))


@routes.get(f"/members/{MEMBER_ID}/points")
@openapi(summary="A member's points and ledger", tags=["points"], query=PageQuery, response=PointsOut)
async def member_points(request: web.Request) -> web.Response:
    member = await visible_member(request)
    query = parse_query(request, PageQuery)
    return json_response(await request.app[POINTS].view(member["_id"], query.cursor, query.limit))


@routes.post(f"/members/{MEMBER_ID}/points/adjustments")
@openapi(summary="Adjust a member's points (HQ)", tags=["points"], request=PointsAdjustment, status=201)
async def adjust_points(request: web.Request) -> web.Response:
    member = await visible_member(request, roles=("hq_admin",))
    body = await parse_body(request, PointsAdjustment)
    return await once(request, lambda: request.app[POINTS].adjust(member["_id"], body.delta, body.note))


@routes.get(f"/members/{MEMBER_ID}/analytics")
@openapi(summary="A member's purchase analytics", tags=["analytics"])
async def member_analytics(request: web.Request) -> web.Response:
    member = await visible_member(request)
    return json_response(await request.app[ANALYTICS].member(member["_id"]))


@routes.get("/members/stores/{store_id}/analytics")
@openapi(summary="Store acquisition analytics", tags=["analytics"])
async def store_analytics(request: web.Request) -> web.Response:
    principal = require(request, "store_manager", "franchisee", "hq_admin")
    store_id = request.match_info["store_id"]
    if not principal.can_see_store(store_id):
        raise Problem(404, "not-found", "store not found")
    return json_response(await request.app[ANALYTICS].store(store_id))
