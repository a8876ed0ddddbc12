"""HTTP entrypoints: thin; they parse, check the caller's role, call one use case and answer."""
from __future__ import annotations

import json

from aiohttp import web
from pydantic import ValidationError

from libs.auth import require
from libs.http import SETTINGS, json_response, parse_body, parse_query, validation_problem
from libs.idempotency import IdempotencyGuard, create_once
from libs.openapi import openapi
from libs.problems import Problem
from libs.service import MONGO
from services.orders.payments.port import SIGNATURE_HEADER
from services.orders.schemas import (CancelRequest, ListQuery, OrderPage, OrderRequest, OrderView, PayRequest,
                                     CounterOrderView, PaymentCallback, PickupCodeView, PickupRequest, ReceiveReturn,
                                     ReturnAnswer, ReturnCodeOut, ReturnRequest, ShipRequest)
from services.orders.domain.requests import RequestKey
from services.orders.usecases import (CHECKOUT, FULFILMENT, ORDERS, PAYMENT_PROVIDER, PAYMENTS, RETURNS)
from services.orders.views import public_order

routes = web.RouteTableDef()
TAGS = ["orders"]
STAFF = ("store_staff", "store_manager", "hq_admin")


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


async def request_key(request: web.Request) -> RequestKey | None:
    """The request's Idempotency-Key (scoped to caller, method and path, with the body's hash), kept inside
    the order by the use case instead of a record of its own; None without the header."""
    guard = IdempotencyGuard(request.app[MONGO], request, await request.read())
    return RequestKey.of(guard.scope, guard.body_hash) if guard.active else None


def answered(status: int, body: dict, replayed: bool) -> web.Response:
    return json_response(body, status=status, headers={"Idempotent-Replayed": "true"} if replayed else None)


def _with_dev_code(request: web.Request, order: dict, code: str) -> dict:
    """In dev mode only (like the OTP's dev_code), the answer shows the code notifications would send."""
    body = public_order(order)
    if request.app[SETTINGS].dev_mode:
        body["dev_pickup_code"] = code
    return body


@routes.post("/orders")
@openapi(summary="Place an order (reserve stock, hold coupons and points; then pay within the window)",
         request=OrderRequest, response=OrderView, status=201, tags=TAGS)
async def create_order(request: web.Request) -> web.Response:
    principal = require(request, "customer", "store_staff", "store_manager")
    body = await parse_body(request, OrderRequest)
    # A demand known to be sold out is refused before any claim or write: such a refusal costs nothing.
    return answered(*await request.app[CHECKOUT].place(principal, body, await request_key(request)))


@routes.get("/orders")
@openapi(summary="List orders: a member's own, a store's (staff), or all (HQ); newest first",
         query=ListQuery, response=OrderPage, tags=TAGS)
async def list_orders(request: web.Request) -> web.Response:
    principal = require(request)
    query = parse_query(request, ListQuery)
    return json_response(await request.app[ORDERS].page(principal, query.store_id, query.status, query.todo,
                                                        query.cursor, query.limit))


@routes.post("/orders/payments/callback")
@openapi(summary="Payment provider callback (signed with HMAC of the raw body, no bearer token)",
         request=PaymentCallback, response=OrderView, public=True, tags=TAGS)
async def payment_callback(request: web.Request) -> web.Response:
    raw = await request.read()
    if not request.app[PAYMENT_PROVIDER].verify_callback(raw, request.headers.get(SIGNATURE_HEADER)):
        raise Problem(401, "invalid-signature", "the payment callback signature does not verify")
    try:
        body = PaymentCallback.model_validate(json.loads(raw))
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            raise validation_problem(exc) from None
        raise Problem(400, "malformed-json", "callback body is not JSON") from None
    if body.status == "succeeded" and not body.payment_id:
        raise Problem(422, "validation-error", "a succeeded callback carries payment_id")
    return json_response(await request.app[PAYMENTS].callback(body.model_dump()))


@routes.get("/orders/{order_id}")
@openapi(summary="One order", response=OrderView, tags=TAGS)
async def get_order(request: web.Request) -> web.Response:
    principal = require(request)
    return json_response(public_order(await request.app[ORDERS].get_visible(principal, _order_id(request))))


@routes.post("/orders/{order_id}/pay")
@openapi(summary="Pay an order by card (202 when the provider's answer is still to come)",
         request=PayRequest, responses={200: OrderView, 202: OrderView}, tags=TAGS)
async def pay(request: web.Request) -> web.Response:
    principal = require(request)
    body = await parse_body(request, PayRequest)
    order_id, payments = _order_id(request), request.app[PAYMENTS]
    # A retried /pay (lost answer) with the same Idempotency-Key gets the first answer, never a second charge.
    return answered(*await payments.pay(principal, order_id, body.card_number, await request_key(request)))


@routes.post("/orders/{order_id}/cancel")
@openapi(summary="Cancel an order before shipment or handover (a paid one is refunded)",
         request=CancelRequest, response=OrderView, tags=TAGS)
async def cancel(request: web.Request) -> web.Response:
    principal = require(request)
    body = await optional_body(request, CancelRequest)
    order = await request.app[FULFILMENT].cancel(principal, _order_id(request), body.reason)
    return json_response(public_order(order))


@routes.post("/orders/{order_id}/ready-for-pickup")
@openapi(summary="The goods wait at the store: the buyer is sent a pickup code", response=PickupCodeView,
         tags=TAGS)
async def ready_for_pickup(request: web.Request) -> web.Response:
    principal = require(request, *STAFF)
    order, code = await request.app[FULFILMENT].ready_for_pickup(principal, _order_id(request))
    return json_response(_with_dev_code(request, order, code))


@routes.post("/orders/{order_id}/pickup-code/reset")
@openapi(summary="A manager resets a (locked) pickup: a fresh code, attempts back to zero",
         response=PickupCodeView, tags=TAGS)
async def reset_pickup_code(request: web.Request) -> web.Response:
    principal = require(request, "store_manager", "hq_admin")
    order, code = await request.app[FULFILMENT].reset_pickup_code(principal, _order_id(request))
    return json_response(_with_dev_code(request, order, code))


@routes.get("/orders/internal/orders/{order_id}/pickup-code")
async def pickup_code_to_send(request: web.Request) -> web.Response:
    """Notifications fetches the code when it sends the member's message (scope orders:pickup-codes)."""
    require(request, scope="orders:pickup-codes")
    return json_response(await request.app[FULFILMENT].code_to_send(_order_id(request)), headers={
        "Cache-Control": "no-store"})


@routes.post("/orders/{order_id}/pickup")
@openapi(summary="Hand over with the buyer's pickup code (wrong codes count; too many lock the order)",
         request=PickupRequest, response=OrderView, tags=TAGS)
async def pickup(request: web.Request) -> web.Response:
    principal = require(request, *STAFF)
    body = await parse_body(request, PickupRequest)
    return json_response(public_order(await request.app[FULFILMENT].pickup(principal, _order_id(request), body.code)))


@routes.post("/orders/{order_id}/ship")
@openapi(summary="Ship an allocated order", request=ShipRequest, response=OrderView, tags=TAGS)
async def ship(request: web.Request) -> web.Response:
    principal = require(request, *STAFF)
    body = await parse_body(request, ShipRequest)
    order = await request.app[FULFILMENT].ship(principal, _order_id(request), body.carrier, body.tracking_number)
    return json_response(public_order(order))


@routes.post("/orders/{order_id}/complete")
@openapi(summary="Confirm delivery of a shipped order", response=OrderView, tags=TAGS)
async def complete(request: web.Request) -> web.Response:
    principal = require(request)
    return json_response(public_order(await request.app[FULFILMENT].complete(principal, _order_id(request))))


@routes.post("/orders/{order_id}/return-code")
@openapi(summary="The member's app asks for a return code to show at a store's counter (short-lived, used once; "
                 "a new one replaces the last)", response=ReturnCodeOut, tags=TAGS)
async def issue_return_code(request: web.Request) -> web.Response:
    principal = require(request, "customer")
    return json_response(await request.app[RETURNS].issue_code(principal, _order_id(request)))


@routes.post("/orders/{order_id}/returns")
@openapi(summary="Ask to return (part of) a completed order: the owner online, or staff at their counter with "
                 "the customer's proof (cross-store or high-value: a manager)", request=ReturnRequest,
         response=ReturnAnswer, status=201, tags=TAGS)
async def request_return(request: web.Request) -> web.Response:
    principal = require(request)
    body = await parse_body(request, ReturnRequest)
    order_id, returns = _order_id(request), request.app[RETURNS]
    lines = [line.model_dump() for line in body.lines]
    proof = body.proof.model_dump(exclude_none=True) if body.proof else None
    return await create_once(request.app[MONGO], request, lambda: returns.request(
        principal, order_id, lines, body.reason, body.location_id, proof))


@routes.post("/orders/{order_id}/returns/{return_id}/receive")
@openapi(summary="Receive returned goods at a store (stock goes back there, the refund follows); the customer's "
                 "proof unless opened at this counter with it; cross-store or high-value: a manager",
         request=ReceiveReturn, response=OrderView | CounterOrderView, tags=TAGS)
async def receive_return(request: web.Request) -> web.Response:
    principal = require(request, *STAFF)
    body = await parse_body(request, ReceiveReturn)
    proof = body.proof.model_dump(exclude_none=True) if body.proof else None
    return json_response(await request.app[RETURNS].receive(principal, _order_id(request),
                                                            request.match_info["return_id"], body.location_id, proof))
