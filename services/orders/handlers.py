"""HTTP entrypoints: thin; they parse, check the caller, call the order service and answer."""
from __future__ import annotations

import json
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from libs.auth import require
from libs.http import SETTINGS, json_response, parse_body, parse_query, validation_problem
from libs.idempotency import guarded
from libs.pagination import decode_cursor, encode_cursor
from libs.problems import Problem
from libs.service import MONGO
from services.orders.app_keys import ORDERS, PAYMENTS
from services.orders.domain.lifecycle import CHANNELS
from services.orders.payments.port import SIGNATURE_HEADER
from services.orders.service import public_order

routes = web.RouteTableDef()
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-.:]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineIn(Strict):
    sku_id: Id
    qty: int = Field(ge=1, le=99)


class Address(BaseModel):
    model_config = ConfigDict(extra="allow")
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class ShipTo(Strict):
    type: Literal["ship"]
    address: Address


class PickupAt(Strict):
    type: Literal["pickup"]
    location_id: Id


class InStore(Strict):
    type: Literal["in_store"]
    location_id: Id
    scanned_codes: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=50)


class AttributionIn(Strict):
    """Only a QR code scanned in this session: membership says whose it is (a client naming a store or an
    assistant directly could steer commissions)."""
    code: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class OrderRequest(Strict):
    channel: Literal[CHANNELS]
    lines: list[LineIn] = Field(default_factory=list, max_length=50)
    fulfilment: ShipTo | PickupAt | InStore = Field(discriminator="type")
    coupon_codes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=5)
    points: int = Field(default=0, ge=0, le=10_000_000)
    attribution: AttributionIn | None = None

    @model_validator(mode="after")
    def _something_to_buy(self):
        scanned = self.fulfilment.type == "in_store" and self.fulfilment.scanned_codes
        if not self.lines and not scanned:
            raise ValueError("an order needs lines (or, in store, scanned product codes)")
        return self


class PayRequest(Strict):
    method: Literal["card"] = "card"
    card_number: str = Field(min_length=12, max_length=23, pattern=r"^[0-9 ]+$")


class CancelRequest(Strict):
    reason: str = Field(default="cancelled by request", max_length=500)


class PickupRequest(Strict):
    code: str = Field(min_length=1, max_length=16)


class ShipRequest(Strict):
    carrier: str = Field(min_length=1, max_length=64)
    tracking_number: str = Field(min_length=1, max_length=64)


class ReturnRequest(Strict):
    lines: list[LineIn] = Field(min_length=1, max_length=50)
    reason: str = Field(min_length=1, max_length=500)
    location_id: Id | None = None


class ReceiveReturn(Strict):
    location_id: Id


class ListQuery(Strict):
    store_id: Id | None = None
    status: Annotated[str, Field(max_length=32)] | None = None
    todo: bool = False
    cursor: Annotated[str, Field(max_length=128)] | None = None
    limit: int = Field(default=20, ge=1, le=100)


class PaymentCallback(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: Id
    attempt_id: Id
    status: Literal["succeeded", "failed"]
    payment_id: Id | None = None
    amount: int = Field(ge=0)
    fee: int = Field(default=0, ge=0)
    reason: str | None = None


async def optional_body(request: web.Request, model):
    """Endpoints whose body may be omitted: an empty body means the defaults."""
    if not await request.read():
        return model()
    return await parse_body(request, model)


def _order_id(request: web.Request) -> str:
    order_id = request.match_info["order_id"]
    if len(order_id) > 64:
        raise Problem(404, "not-found", "order not found")
    return order_id


@routes.post("/orders")
async def create_order(request: web.Request) -> web.Response:
    principal = require(request, "customer", "store_staff", "store_manager")
    body = await parse_body(request, OrderRequest)
    service = request.app[ORDERS]
    return await guarded(request.app[MONGO], request, lambda remember: service.checkout(principal, body, remember))


@routes.get("/orders")
async def list_orders(request: web.Request) -> web.Response:
    principal = require(request)
    query = parse_query(request, ListQuery)
    items, last_id = await request.app[ORDERS].list_orders(principal, query.store_id, query.status, query.todo,
                                                          decode_cursor(query.cursor), query.limit)
    return json_response({"items": [public_order(o) for o in items],
                          "next_cursor": encode_cursor(last_id) if last_id else None})


@routes.post("/orders/payments/callback")
async def payment_callback(request: web.Request) -> web.Response:
    """Signed by the provider (HMAC of the raw body); no bearer token, the signature is the credential."""
    raw = await request.read()
    if not request.app[PAYMENTS].verify_callback(raw, request.headers.get(SIGNATURE_HEADER)):
        raise Problem(401, "invalid-signature", "the payment callback signature does not verify")
    try:
        body = PaymentCallback.model_validate(json.loads(raw))
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise validation_problem(exc) from None
        raise Problem(400, "malformed-json", "callback body is not JSON") from None
    if body.status == "succeeded" and not body.payment_id:
        raise Problem(422, "validation-error", "a succeeded callback carries payment_id")
    return json_response(await request.app[ORDERS].payment_callback(body.model_dump()))


@routes.get("/orders/{order_id}")
async def get_order(request: web.Request) -> web.Response:
    principal = require(request)
    return json_response(public_order(await request.app[ORDERS].get_visible(principal, _order_id(request))))


@routes.post("/orders/{order_id}/pay")
async def pay(request: web.Request) -> web.Response:
    principal = require(request)
    body = await parse_body(request, PayRequest)
    order_id, service = _order_id(request), request.app[ORDERS]
    # A retried /pay (lost answer) with the same Idempotency-Key gets the first answer, never a second charge.
    return await guarded(request.app[MONGO], request,
                         lambda remember: service.pay(principal, order_id, body.card_number, remember))


@routes.post("/orders/{order_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    principal = require(request)
    body = await optional_body(request, CancelRequest)
    return json_response(public_order(await request.app[ORDERS].cancel(principal, _order_id(request), body.reason)))


@routes.post("/orders/{order_id}/ready-for-pickup")
async def ready_for_pickup(request: web.Request) -> web.Response:
    principal = require(request, "store_staff", "store_manager", "hq_admin")
    order, code = await request.app[ORDERS].ready_for_pickup(principal, _order_id(request))
    return json_response(_with_dev_code(request, public_order(order), code))


@routes.post("/orders/{order_id}/pickup-code/reset")
async def reset_pickup_code(request: web.Request) -> web.Response:
    principal = require(request, "store_manager", "hq_admin")
    order, code = await request.app[ORDERS].reset_pickup_code(principal, _order_id(request))
    return json_response(_with_dev_code(request, public_order(order), code))


def _with_dev_code(request: web.Request, body: dict, code: str) -> dict:
    """In dev mode only (like the OTP's dev_code), the answer shows the code notifications would send."""
    if request.app[SETTINGS].dev_mode:
        body["dev_pickup_code"] = code
    return body


@routes.post("/orders/{order_id}/pickup")
async def pickup(request: web.Request) -> web.Response:
    principal = require(request, "store_staff", "store_manager", "hq_admin")
    body = await parse_body(request, PickupRequest)
    return json_response(public_order(await request.app[ORDERS].pickup(principal, _order_id(request), body.code)))


@routes.post("/orders/{order_id}/ship")
async def ship(request: web.Request) -> web.Response:
    principal = require(request, "store_staff", "store_manager", "hq_admin")
    body = await parse_body(request, ShipRequest)
    order = await request.app[ORDERS].ship(principal, _order_id(request), body.carrier, body.tracking_number)
    return json_response(public_order(order))


@routes.post("/orders/{order_id}/complete")
async def complete(request: web.Request) -> web.Response:
    principal = require(request)
    return json_response(public_order(await request.app[ORDERS].complete(principal, _order_id(request))))


@routes.post("/orders/{order_id}/returns")
async def request_return(request: web.Request) -> web.Response:
    principal = require(request)
    body = await parse_body(request, ReturnRequest)
    order_id = _order_id(request)
    service = request.app[ORDERS]

    async def create(remember):
        answer = await service.request_return(principal, order_id, [l.model_dump() for l in body.lines],
                                              body.reason, body.location_id, remember)
        return 201, answer

    return await guarded(request.app[MONGO], request, create)


@routes.post("/orders/{order_id}/returns/{return_id}/receive")
async def receive_return(request: web.Request) -> web.Response:
    principal = require(request, "store_staff", "store_manager", "hq_admin")
    body = await parse_body(request, ReceiveReturn)
    order = await request.app[ORDERS].receive_return(principal, _order_id(request), request.match_info["return_id"],
                                                     body.location_id)
    return json_response(public_order(order))
