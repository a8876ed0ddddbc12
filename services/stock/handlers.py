"""HTTP entrypoints of stock: thin, they parse, authorise, call a use case in one transaction, answer."""
from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Literal

from aiohttp import web
from pymongo.errors import DuplicateKeyError, PyMongoError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from libs.auth import Principal, require
from libs.http import SETTINGS, json_response, parse_body, parse_query
from libs.idempotency import guarded
from libs.openapi import openapi
from libs.mongo import ConcurrencyConflict
from libs.pagination import decode_cursor, encode_cursor
from libs.problems import Problem, not_found
from services.stock import metrics
from services.stock.schemas import (AvailabilityOut, LevelOut, LevelPage, LocationOut, LocationPage, MovementOut,
                                    MovementPage)
from services.stock.domain.model import MOVEMENT_KINDS, StockError
from services.stock.domain.routing import Decision, Point, distance_m, is_open, sellable
from services.stock.usecases import STOCK, movement_view, reservation_view, site_of

routes = web.RouteTableDef()

LOCATION_ID = r"^loc_[A-Za-z0-9_\-]{1,64}$"
SKU_ID = r"^sku_[A-Za-z0-9_\-]{1,100}$"
ORDER_ID = r"^[A-Za-z0-9_\-]{1,100}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- request models --------------------------------------------------------------------------

class Capabilities(Strict):
    pickup: bool = False
    ship: bool = False
    sell_online: bool = True


class NewLocation(Strict):
    id: str | None = Field(None, pattern=LOCATION_ID)
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["store", "warehouse"]
    ownership: Literal["direct", "franchise"] = "direct"
    franchisee_id: str | None = Field(None, min_length=1, max_length=100)
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    address: str = Field("", max_length=500)
    opening_hours: str = Field("", max_length=100)
    capabilities: Capabilities = Capabilities()
    daily_capacity: int = Field(0, ge=0, le=1_000_000)
    safety_stock: int = Field(0, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def franchise_has_franchisee(self):
        if self.ownership == "franchise" and not self.franchisee_id:
            raise ValueError("a franchise location needs its franchisee_id")
        if self.ownership == "direct" and self.franchisee_id:
            raise ValueError("a direct location has no franchisee_id")
        return self


class LocationPatch(Strict):
    name: str | None = Field(None, min_length=1, max_length=200)
    address: str | None = Field(None, max_length=500)
    opening_hours: str | None = Field(None, max_length=100)
    capabilities: Capabilities | None = None
    daily_capacity: int | None = Field(None, ge=0, le=1_000_000)
    safety_stock: int | None = Field(None, ge=0, le=1_000_000)
    active: bool | None = None


class LineIn(Strict):
    sku_id: str = Field(pattern=SKU_ID)
    qty: int = Field(ge=1, le=10_000, strict=True)


class PointIn(Strict):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class ReservationIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: str = Field(pattern=ORDER_ID)
    mode: Literal["ship", "pickup", "in_store"]
    lines: list[LineIn] = Field(min_length=1, max_length=100)
    location_id: str | None = Field(None, pattern=LOCATION_ID)
    destination: PointIn | None = None
    ttl_s: int | None = Field(None, ge=1, le=30 * 24 * 3600)

    @model_validator(mode="after")
    def store_for_store_modes(self):
        if self.mode in ("pickup", "in_store") and not self.location_id:
            raise ValueError(f"mode {self.mode} needs location_id")
        return self


class ExtendIn(Strict):
    ttl_s: int = Field(ge=1, le=30 * 24 * 3600)


class ReleaseIn(Strict):
    reason: Literal["cancelled", "expired", "payment_failed", "order_cancelled"] = "cancelled"


class MovementIn(Strict):
    kind: Literal[MOVEMENT_KINDS]  # type: ignore[valid-type]
    key: str = Field(min_length=1, max_length=200)
    location_id: str | None = Field(None, pattern=LOCATION_ID)
    sku_id: str | None = Field(None, pattern=SKU_ID)
    qty: int | None = Field(None, ge=1, le=1_000_000, strict=True)
    delta: int | None = Field(None, ge=-1_000_000, le=1_000_000, strict=True)
    counted: int | None = Field(None, ge=0, le=1_000_000, strict=True)
    reason: str | None = Field(None, min_length=1, max_length=500)
    to_location_id: str | None = Field(None, pattern=LOCATION_ID)
    transfer_id: str | None = Field(None, pattern=r"^trf_[a-f0-9]{1,40}$")
    reference: str | None = Field(None, max_length=200)

    @model_validator(mode="after")
    def fields_of_kind(self):
        needed = {"receive": ("location_id", "sku_id", "qty"), "sale": ("location_id", "sku_id", "qty"),
                  "return_to_stock": ("location_id", "sku_id", "qty"),
                  "adjust": ("location_id", "sku_id", "delta", "reason"),
                  "count": ("location_id", "sku_id", "counted"),
                  "transfer_out": ("location_id", "sku_id", "qty", "to_location_id"),
                  "transfer_in": ("transfer_id",)}[self.kind]
        missing = [name for name in needed if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} movement needs {', '.join(missing)}")
        if self.kind == "adjust" and self.delta == 0:
            raise ValueError("an adjustment needs a non-zero delta")
        return self


class PageQuery(Strict):
    cursor: str | None = Field(None, max_length=200)
    limit: int = Field(50, ge=1, le=200)


class LocationQuery(PageQuery):
    kind: Literal["store", "warehouse"] | None = None


class AvailabilityQuery(Strict):
    sku: str = Field(pattern=SKU_ID)
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    mode: Literal["pickup", "ship", "in_store"] = "pickup"
    limit: int = Field(10, ge=1, le=50)


class LevelQuery(PageQuery):
    location_id: str | None = Field(None, pattern=LOCATION_ID)
    sku_id: str | None = Field(None, pattern=SKU_ID)


# --- helpers ---------------------------------------------------------------------------------


def page(items: list, limit: int, last_key) -> dict:
    more = len(items) > limit
    items = items[:limit]
    return {"items": items, "next_cursor": encode_cursor(str(last_key(items[-1]))) if more and items else None}


def location_view(doc: dict) -> dict:
    return {"id": doc["_id"], "name": doc["name"], "kind": doc["kind"], "ownership": doc.get("ownership", "direct"),
            "franchisee_id": doc.get("franchisee_id"), "lat": doc["lat"], "lng": doc["lng"],
            "address": doc.get("address", ""), "opening_hours": doc.get("opening_hours", ""),
            "capabilities": doc.get("capabilities", {}), "daily_capacity": doc.get("daily_capacity", 0),
            "safety_stock": doc.get("safety_stock", 0), "active": doc.get("active", True)}


def level_view(doc: dict) -> dict:
    return {"location_id": doc["location_id"], "sku_id": doc["sku_id"], "on_hand": doc["on_hand"],
            "reserved": doc["reserved"], "available": doc["available"], "in_transit": doc.get("in_transit", 0),
            "reorder_point": doc.get("reorder_point", 0)}


async def transaction_replaying_duplicates(mongo, unit):
    """Run `unit`; when a concurrent request with the same order id / movement key committed first (unique
    index, real replica set), run it again: it then finds that record and answers as its replay. When the
    contention outlasts the transaction helper's retries, answer 503 with Retry-After rather than a 500:
    nothing was changed and the caller may simply try again."""
    try:
        try:
            return await mongo.transaction(unit)
        except DuplicateKeyError:
            return await mongo.transaction(unit)
    except ConcurrencyConflict:
        raise Problem(503, "contention", "stock is under heavy contention; nothing was changed, retry shortly",
                      headers={"Retry-After": "1"}) from None
    except PyMongoError as exc:
        if exc.has_error_label("TransientTransactionError"):
            raise Problem(503, "contention", "stock is under heavy contention; nothing was changed, retry shortly",
                          headers={"Retry-After": "1"}) from None
        raise


def stock_problem(error: StockError, **extensions) -> Problem:
    return Problem(error.status, error.code, error.detail, **extensions)


async def visible_stores(request: web.Request, principal: Principal) -> list[str]:
    """The stores a non-HQ caller may read: staff their own, a franchisee every store it runs."""
    stores = set(principal.store_ids)
    if principal.has("franchisee") and principal.franchisee_id:
        stores |= {doc["_id"] for doc in await request.app[STOCK].locations.all()
                   if doc.get("franchisee_id") == principal.franchisee_id}
    return sorted(stores)


def staff_may_write(principal: Principal, location_id: str | None) -> None:
    if not principal.can_see_store(location_id):
        raise Problem(403, "forbidden", "store staff may change stock only in their own store")


# --- locations -------------------------------------------------------------------------------

@routes.get("/stock/locations")
@openapi(summary="Stores and warehouses", query=LocationQuery, response=LocationPage, public=True, tags=["stock"])
async def list_locations(request: web.Request) -> web.Response:
    query = parse_query(request, LocationQuery)
    docs = await request.app[STOCK].locations.page(decode_cursor(query.cursor), query.limit + 1, query.kind)
    return json_response(page([location_view(d) for d in docs], query.limit, lambda item: item["id"]))


@routes.get("/stock/locations/{location_id}")
@openapi(summary="One location", response=LocationOut, public=True, tags=["stock"])
async def get_location(request: web.Request) -> web.Response:
    doc = await request.app[STOCK].locations.get(request.match_info["location_id"])
    if doc is None:
        raise not_found("location")
    return json_response(location_view(doc))


@routes.post("/stock/locations")
@openapi(summary="Open a location (HQ)", request=NewLocation, response=LocationOut, status=201, tags=["stock"])
async def create_location(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    body = await parse_body(request, NewLocation)
    stock = request.app[STOCK]

    async def create(remember):
        data = body.model_dump(exclude={"id"})
        doc = {"_id": body.id or f"loc_{uuid.uuid4().hex[:12]}", **data, "active": True}

        async def unit(session):
            if await stock.locations.get(doc["_id"], session) is not None:
                raise Problem(409, "location-exists", f"location {doc['_id']} already exists")
            await stock.locations.add(doc, session)
            await remember(session, 201, location_view(doc))

        try:
            await stock.mongo.transaction(unit)
        except DuplicateKeyError:
            raise Problem(409, "location-exists", f"location {doc['_id']} already exists") from None
        return 201, location_view(doc)

    return await guarded(stock.mongo, request, create)


@routes.patch("/stock/locations/{location_id}")
@openapi(summary="Change a location (HQ): capacity, safety stock, flags", request=LocationPatch, response=LocationOut, tags=["stock"])
async def update_location(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    patch = await parse_body(request, LocationPatch)
    stock = request.app[STOCK]

    async def unit(session):
        doc = await stock.locations.get(request.match_info["location_id"], session)
        if doc is None:
            raise not_found("location")
        doc.update(patch.model_dump(exclude_none=True))
        return await stock.locations.save(doc, session)

    return json_response(location_view(await stock.mongo.transaction(unit)))


# --- availability and levels -----------------------------------------------------------------

@routes.get("/stock/availability")
@openapi(summary="Nearest stores that can serve a SKU now", query=AvailabilityQuery, response=AvailabilityOut, public=True, tags=["stock"])
async def availability(request: web.Request) -> web.Response:
    """The nearest stores that can serve this SKU now (what an online order may take there)."""
    query = parse_query(request, AvailabilityQuery)
    stock = request.app[STOCK]
    levels = {doc["location_id"]: doc for doc in await stock.levels.for_skus([query.sku], in_stock_only=True)}
    locations = await stock.locations.by_ids(sorted(levels))
    here = Point(query.lat, query.lng)
    local = datetime.now(UTC) + timedelta(hours=request.app[SETTINGS].capacity_day_utc_offset_h)
    local_minutes = local.hour * 60 + local.minute
    items = []
    for doc in locations:
        site = site_of(doc)
        if not site.active or site.kind != "store" or site.id not in levels:
            continue
        if query.mode == "pickup" and not (site.pickup and site.sell_online):
            continue
        can_take = sellable(site, levels[site.id]["available"], query.mode)
        if can_take <= 0:
            continue
        items.append({"location_id": site.id, "name": doc["name"], "distance_m": distance_m(here, Point(site.lat, site.lng)),
                      "available": can_take, "pickup": site.pickup, "ship": site.ship,
                      "opening_hours": doc.get("opening_hours", ""),
                      "open_now": is_open(doc.get("opening_hours", ""), local_minutes)})
    items.sort(key=lambda item: (item["distance_m"], item["location_id"]))
    return json_response({"sku_id": query.sku, "mode": query.mode, "items": items[:query.limit]})


@routes.get("/stock/levels")
@openapi(summary="Stock levels (staff: their stores)", query=LevelQuery, response=LevelPage, tags=["stock"])
async def list_levels(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin", "store_manager", "store_staff", "franchisee")
    query = parse_query(request, LevelQuery)
    filters: dict = {}
    if query.sku_id:
        filters["sku_id"] = query.sku_id
    if query.location_id:
        if not principal.is_admin and query.location_id not in await visible_stores(request, principal):
            raise not_found("location")
        filters["location_id"] = query.location_id
    elif not principal.is_admin:
        filters["location_id"] = {"$in": await visible_stores(request, principal)}
    docs = await request.app[STOCK].levels.page(filters, decode_cursor(query.cursor), query.limit + 1)
    more = len(docs) > query.limit
    docs = docs[:query.limit]
    return json_response({"items": [level_view(d) for d in docs],
                          "next_cursor": encode_cursor(docs[-1]["_id"]) if more and docs else None})


class LevelSettings(Strict):
    reorder_point: int = Field(ge=0, le=1_000_000, strict=True)


@routes.put("/stock/levels/{location_id}/{sku_id}")
@openapi(summary="Set the reorder point of a level (stock.level_low fires under it)", request=LevelSettings,
         response=LevelOut, tags=["stock"])
async def set_level(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin", "store_manager")
    body = await parse_body(request, LevelSettings)
    location_id, sku_id = request.match_info["location_id"], request.match_info["sku_id"]
    if not re.fullmatch(SKU_ID, sku_id):
        raise Problem(422, "validation-error", "sku_id is not a SKU id")
    staff_may_write(principal, location_id)
    stock = request.app[STOCK]

    async def unit(session):
        if await stock.locations.get(location_id, session) is None:
            raise not_found("location")
        await stock.levels.ensure(location_id, sku_id, session)
        await stock.levels.set_reorder_point(location_id, sku_id, body.reorder_point, session)
        return await stock.levels.get(location_id, sku_id, session)

    return json_response(level_view(await stock.mongo.transaction(unit)))


# --- movements -------------------------------------------------------------------------------

@routes.post("/stock/movements")
@openapi(summary="Record a movement (receive, sale, adjust, count, transfer, return); idempotent by key", request=MovementIn, response=MovementOut, status=201, tags=["stock"])
async def post_movement(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin", "store_manager", "store_staff")
    body = await parse_body(request, MovementIn)
    stock = request.app[STOCK]
    movement = body.model_dump(exclude_none=True)
    if body.kind == "transfer_in":
        transfer = await stock.transfers.get(body.transfer_id)
        staff_may_write(principal, transfer["to_location_id"] if transfer else body.location_id)
    else:
        staff_may_write(principal, body.location_id)

    async def create(remember):
        async def unit(session):
            entry, created = await stock.record_movement(movement, principal.subject, session)
            await remember(session, 201, movement_view(entry))
            return entry, created

        try:
            entry, created = await transaction_replaying_duplicates(stock.mongo, unit)
        except StockError as error:
            raise stock_problem(error) from None
        return 201, movement_view(entry)

    return await guarded(stock.mongo, request, create)


@routes.get("/stock/movements")
@openapi(summary="The movement ledger, newest first", query=LevelQuery, response=MovementPage, tags=["stock"])
async def list_movements(request: web.Request) -> web.Response:
    principal = require(request, "hq_admin", "store_manager", "store_staff", "franchisee")
    query = parse_query(request, LevelQuery)
    filters: dict = {}
    if query.location_id:
        if not principal.is_admin and query.location_id not in await visible_stores(request, principal):
            raise not_found("location")
        filters["location_id"] = query.location_id
    elif not principal.is_admin:
        filters["location_id"] = {"$in": await visible_stores(request, principal)}
    if query.sku_id:
        filters["sku_id"] = query.sku_id
    before = decode_cursor(query.cursor)
    if before is not None and not before.isdigit():
        raise Problem(400, "bad-cursor", "cursor is not one this API issued")
    docs = await request.app[STOCK].ledger.page(filters, int(before) if before else None, query.limit + 1)
    more = len(docs) > query.limit
    docs = docs[:query.limit]
    return json_response({"items": [movement_view(d) for d in docs],
                          "next_cursor": encode_cursor(str(docs[-1]["seq"])) if more and docs else None})


# --- reservations (internal: orders calls these with a service token) -------------------------

@routes.post("/stock/internal/reservations")
async def create_reservation(request: web.Request) -> web.Response:
    require(request, "service")
    body = await parse_body(request, ReservationIn)
    stock = request.app[STOCK]
    started = time.perf_counter()

    reservation = body.model_dump(mode="json")

    async def create(remember):
        async def unit(session):
            outcome = await stock.reserve(reservation, session)
            if isinstance(outcome, Decision):
                return outcome
            doc, created = outcome
            await remember(session, 201, reservation_view(doc))
            return outcome

        try:
            outcome = await transaction_replaying_duplicates(stock.mongo, unit)
        except StockError as error:
            raise stock_problem(error) from None
        metrics.RESERVE_LATENCY.labels(body.mode).observe(time.perf_counter() - started)
        if isinstance(outcome, Decision):
            metrics.RESERVATIONS.labels(body.mode, "rejected").inc()
            detail = ("not enough stock to serve this order" if outcome.reason == "sold-out"
                      else f"the order cannot be served: {outcome.reason}")
            status, type_ = (409, "sold-out") if outcome.reason == "sold-out" else (
                (422, "unknown-location") if outcome.reason == "unknown-location" else (409, "location-cannot-serve"))
            raise Problem(status, type_, detail, order_id=body.order_id, nearest=outcome.nearest,
                          decision=outcome.explain())
        doc, created = outcome
        if created:
            metrics.RESERVATIONS.labels(body.mode, "reserved").inc()
            metrics.RESERVED_UNITS.labels(body.mode).inc(sum(line.qty for line in body.lines))
            metrics.ROUTING_LOCATIONS.labels(body.mode).observe(len(doc["allocations"]))
        else:
            metrics.RESERVATIONS.labels(body.mode, "replayed").inc()
        return 201, reservation_view(doc)

    return await guarded(stock.mongo, request, create)


@routes.get("/stock/internal/reservations/{order_id}")
async def get_reservation(request: web.Request) -> web.Response:
    require(request, "service", "hq_admin")
    doc = await request.app[STOCK].reservations.by_order(request.match_info["order_id"])
    if doc is None:
        raise not_found("reservation")
    return json_response(reservation_view(doc))


async def _optional_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    if not await request.read():
        return model()
    return await parse_body(request, model)


@routes.post("/stock/internal/reservations/{order_id}/commit")
async def commit_reservation(request: web.Request) -> web.Response:
    require(request, "service")
    stock = request.app[STOCK]
    try:
        doc, changed = await stock.mongo.transaction(lambda s: stock.commit(request.match_info["order_id"], s))
    except StockError as error:
        raise stock_problem(error) from None
    if changed:
        metrics.COMMITS.inc()
    return json_response(reservation_view(doc))


@routes.post("/stock/internal/reservations/{order_id}/release")
async def release_reservation(request: web.Request) -> web.Response:
    require(request, "service")
    body = await _optional_body(request, ReleaseIn)
    stock = request.app[STOCK]
    try:
        doc, changed = await stock.mongo.transaction(
            lambda s: stock.release(request.match_info["order_id"], body.reason, s))
    except StockError as error:
        raise stock_problem(error) from None
    if changed:
        metrics.RELEASES.labels(body.reason).inc()
    return json_response(reservation_view(doc))


@routes.post("/stock/internal/reservations/{order_id}/extend")
async def extend_reservation(request: web.Request) -> web.Response:
    require(request, "service")
    body = await parse_body(request, ExtendIn)
    stock = request.app[STOCK]
    if body.ttl_s > request.app[SETTINGS].reservation_max_ttl_s:
        raise Problem(422, "validation-error", f"ttl_s may be at most {request.app[SETTINGS].reservation_max_ttl_s}")
    try:
        doc = await stock.mongo.transaction(lambda s: stock.extend(request.match_info["order_id"], body.ttl_s, s))
    except StockError as error:
        raise stock_problem(error) from None
    return json_response(reservation_view(doc))
