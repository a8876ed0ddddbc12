"""HTTP entrypoints of stock: thin, they parse, authorise, call one use case method, answer."""
from __future__ import annotations

import re

from aiohttp import web
from pydantic import BaseModel

from libs.auth import require
from libs.http import json_response, parse_body, parse_query
from libs.idempotency import create_once
from libs.openapi import openapi
from libs.refusal import FORBIDDEN, INVALID, NOT_FOUND, Refusal
from libs.service import MONGO
from services.stock.domain.routing import Point
from services.stock.schemas import (SKU_ID, ApprovalOut, ApprovalPage, ApprovalQuery, AvailabilityOut, Decision, AvailabilityQuery, ExtendIn, LevelOut, LevelPage,
                                    LevelQuery, LevelSettings, LocationOut, LocationPage, LocationPatch,
                                    LocationQuery, MovementIn, MovementOut, MovementPage, NewLocation, ReleaseIn,
                                    ReservationIn)
from services.stock.usecases import APPROVALS, AVAILABILITY, LEVELS, LOCATIONS, MOVEMENTS, RESERVATIONS

routes = web.RouteTableDef()
APPROVAL_ID = r"apr_[A-Za-z0-9_\-]{1,64}"
STAFF_AND_FRANCHISEES = ("hq_admin", "store_manager", "store_staff", "franchisee")


# --- locations -------------------------------------------------------------------------------

@routes.get("/stock/locations")
@openapi(summary="Stores and warehouses", query=LocationQuery, response=LocationPage, public=True, tags=["stock"])
async def list_locations(request: web.Request) -> web.Response:
    query = parse_query(request, LocationQuery)
    return json_response(await request.app[LOCATIONS].page(kind=query.kind, cursor=query.cursor, limit=query.limit))


@routes.get("/stock/locations/{location_id}")
@openapi(summary="One location", response=LocationOut, public=True, tags=["stock"])
async def get_location(request: web.Request) -> web.Response:
    return json_response(await request.app[LOCATIONS].get(request.match_info["location_id"]))


@routes.post("/stock/locations")
@openapi(summary="Open a location (HQ)", request=NewLocation, response=LocationOut, status=201, tags=["stock"])
async def create_location(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, NewLocation)

    async def create():
        return 201, await request.app[LOCATIONS].open(body.model_dump(exclude={"id"}), body.id)

    return await create_once(request.app[MONGO], request, create)


@routes.patch("/stock/locations/{location_id}")
@openapi(summary="Change a location (HQ): capacity, safety stock, flags", request=LocationPatch,
         response=LocationOut, tags=["stock"])
async def update_location(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    patch = await parse_body(request, LocationPatch)
    return json_response(await request.app[LOCATIONS].change(request.match_info["location_id"],
                                                             patch.model_dump(exclude_none=True)))


# --- availability and levels -----------------------------------------------------------------

@routes.get("/stock/availability")
@openapi(summary="Nearest locations that can serve a SKU now in a mode (as routing would)", query=AvailabilityQuery, response=AvailabilityOut,
         public=True, tags=["stock"])
async def availability(request: web.Request) -> web.Response:
    query = parse_query(request, AvailabilityQuery)
    return json_response(await request.app[AVAILABILITY].nearest(query.sku, Point(query.lat, query.lng), query.mode,
                                                                 query.limit))


@routes.get("/stock/levels")
@openapi(summary="Stock levels (staff: their stores)", query=LevelQuery, response=LevelPage, tags=["stock"])
async def list_levels(request: web.Request) -> web.Response:
    principal = require(request, *STAFF_AND_FRANCHISEES)
    query = parse_query(request, LevelQuery)
    return json_response(await request.app[LEVELS].page(principal, location_id=query.location_id,
                                                        sku_id=query.sku_id, cursor=query.cursor, limit=query.limit))


@routes.put("/stock/levels/{location_id}/{sku_id}")
@openapi(summary="Set the reorder point of a level (stock.level_low fires under it)", request=LevelSettings,
         response=LevelOut, tags=["stock"])
async def set_level(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin", "store_manager")
    body = await parse_body(request, LevelSettings)
    location_id, sku_id = request.match_info["location_id"], request.match_info["sku_id"]
    if not re.fullmatch(SKU_ID, sku_id):
        raise Refusal("validation-error", "sku_id is not a SKU id", kind=INVALID)
    return json_response(await request.app[LEVELS].set_reorder_point(principal, location_id, sku_id,
                                                                     body.reorder_point))


# --- movements -------------------------------------------------------------------------------

@routes.post("/stock/movements")
@openapi(summary="Record a movement (receive, sale, adjust, count, transfer, return); idempotent by key; a clerk's "
                 "bulk adjustment, count, receipt or return answers 202 with the approval a manager gives",
         request=MovementIn, responses={201: MovementOut, 202: ApprovalOut}, tags=["stock"])
async def post_movement(request: web.Request) -> web.Response:
    # Orders books a return received at a store (and only that).
    principal = require(request, "hq_admin", "store_manager", "store_staff", scope="stock:returns")
    body = await parse_body(request, MovementIn)
    if principal.is_service and body.kind != "return_to_stock":
        raise Refusal("forbidden", "a service may record returns to stock only", kind=FORBIDDEN)

    async def create():
        return await request.app[MOVEMENTS].record(body.model_dump(exclude_none=True), principal)

    return await create_once(request.app[MONGO], request, create)


@routes.get("/stock/approvals")
@openapi(summary="Clerks' movements waiting for (or decided by) a manager, newest first", query=ApprovalQuery,
         response=ApprovalPage, tags=["stock"])
async def list_approvals(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin", "store_manager", "store_staff")
    query = parse_query(request, ApprovalQuery)
    return json_response(await request.app[APPROVALS].page(principal, location_id=query.location_id,
                                                           status=query.status, cursor=query.cursor,
                                                           limit=query.limit))


async def _decide(request: web.Request, decision: str) -> web.Response:
    principal = require(request, "hq_admin", "store_manager")
    body = await _optional_body(request, Decision)
    approval_id = request.match_info["approval_id"]
    if not re.fullmatch(APPROVAL_ID, approval_id):
        raise Refusal("not-found", "approval not found", kind=NOT_FOUND)
    return json_response(await request.app[APPROVALS].decide(principal, approval_id, decision, body.note))


@routes.post("/stock/approvals/{approval_id}/approve")
@openapi(summary="A manager of the store approves a clerk's movement: it is written to the ledger",
         request=Decision, response=ApprovalOut, tags=["stock"])
async def approve_movement(request: web.Request) -> web.Response:
    return await _decide(request, "approved")


@routes.post("/stock/approvals/{approval_id}/reject")
@openapi(summary="A manager of the store rejects a clerk's movement: nothing changes", request=Decision,
         response=ApprovalOut, tags=["stock"])
async def reject_movement(request: web.Request) -> web.Response:
    return await _decide(request, "rejected")


@routes.get("/stock/movements")
@openapi(summary="The movement ledger, newest first", query=LevelQuery, response=MovementPage, tags=["stock"])
async def list_movements(request: web.Request) -> web.Response:
    principal = require(request, *STAFF_AND_FRANCHISEES)
    query = parse_query(request, LevelQuery)
    return json_response(await request.app[MOVEMENTS].page(principal, location_id=query.location_id,
                                                           sku_id=query.sku_id, cursor=query.cursor,
                                                           limit=query.limit))


# --- reservations (internal: orders calls these with a service token) -------------------------

@routes.post("/stock/internal/reservations")
async def create_reservation(request: web.Request) -> web.Response:
    require(request, scope="stock:reservations")
    body = await parse_body(request, ReservationIn)

    async def create():
        return 201, await request.app[RESERVATIONS].reserve(body.model_dump(mode="json"))

    return await create_once(request.app[MONGO], request, create)


@routes.get("/stock/internal/reservations/{order_id}")
async def get_reservation(request: web.Request) -> web.Response:
    require(request, "hq_admin", scope="stock:reservations")
    return json_response(await request.app[RESERVATIONS].get(request.match_info["order_id"]))


async def _optional_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    if not await request.read():
        return model()
    return await parse_body(request, model)


@routes.post("/stock/internal/reservations/{order_id}/commit")
async def commit_reservation(request: web.Request) -> web.Response:
    require(request, scope="stock:reservations")
    return json_response(await request.app[RESERVATIONS].commit(request.match_info["order_id"]))


@routes.post("/stock/internal/reservations/{order_id}/release")
async def release_reservation(request: web.Request) -> web.Response:
    require(request, scope="stock:reservations")
    body = await _optional_body(request, ReleaseIn)
    return json_response(await request.app[RESERVATIONS].release(request.match_info["order_id"], body.reason))


@routes.post("/stock/internal/reservations/{order_id}/extend")
async def extend_reservation(request: web.Request) -> web.Response:
    require(request, scope="stock:reservations")
    body = await parse_body(request, ExtendIn)
    return json_response(await request.app[RESERVATIONS].extend(request.match_info["order_id"], body.ttl_s))
