"""/auth: JWKS and key rotation, service and staff tokens, one-time codes and member login, refresh, logout;
and the staff accounts HQ manages."""
from __future__ import annotations

from aiohttp import web

from libs.auth import require
from libs.http import json_response, parse_body
from libs.openapi import openapi
from libs.problems import Problem
from services.membership.handlers.common import body_for, once, short_list
from services.membership.schemas import (NewStaff, OtpLogin, OtpRequest, OtpSent, PasswordChange, PasswordReset,
                                         RefreshRequest, ServiceCredentials, StaffAccess,
                                         StaffCredentials, TokenOut)
from services.membership.usecases import CODES, KEYS, STAFF, TOKENS

routes = web.RouteTableDef()
NO_STORE = {"Cache-Control": "no-store"}


def requester_of(request: web.Request) -> str:
    """Who is asking, for login throttling: the client address the gateway asserts in X-Forwarded-For (it
    replaces whatever the client sent; membership is reachable only from inside), else the TCP peer."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    return forwarded.rsplit(",", 1)[-1].strip() or request.remote or "unknown"


@routes.get("/auth/jwks")
@openapi(summary="Public keys that verify every token (JWKS)", tags=["auth"], public=True)
async def jwks(request: web.Request) -> web.Response:
    return json_response(request.app[KEYS].jwks(), headers={"Cache-Control": "public, max-age=60"})


@routes.post("/auth/service/token")
@openapi(summary="Service token (client credentials)", tags=["auth"], request=ServiceCredentials, response=TokenOut,
         public=True)
async def service_token(request: web.Request) -> web.Response:
    body = await parse_body(request, ServiceCredentials)
    answer = request.app[TOKENS].for_service(body.client_id, body.client_secret, body.audience)
    return json_response(answer, headers=NO_STORE)


@routes.post("/auth/staff/token")
@openapi(summary="Staff, manager, franchisee or HQ login", tags=["auth"], request=StaffCredentials, response=TokenOut,
         public=True)
async def staff_token(request: web.Request) -> web.Response:
    body = await parse_body(request, StaffCredentials)
    return json_response(await request.app[STAFF].login(body.username, body.password, requester_of(request)),
                         headers=NO_STORE)


@routes.post("/auth/member/otp")
@openapi(summary="Send a one-time login code to a phone", tags=["auth"], request=OtpRequest, response=OtpSent,
         status=202, public=True)
async def member_otp(request: web.Request) -> web.Response:
    body = await parse_body(request, OtpRequest)
    return json_response(await request.app[CODES].request(body.phone, body.locale), status=202)


@routes.get("/members/internal/otp-codes/{phone}")
async def otp_code_to_send(request: web.Request) -> web.Response:
    """Notifications fetches the pending code when it sends the SMS (scope membership:otp-codes)."""
    require(request, scope="membership:otp-codes")
    return json_response(await request.app[CODES].code_to_send(request.match_info["phone"]), headers=NO_STORE)


@routes.post("/auth/member/token")
@openapi(summary="Member login with phone and one-time code (registers a new member)", tags=["auth"],
         request=OtpLogin, response=TokenOut, public=True)
async def member_token(request: web.Request) -> web.Response:
    body = await parse_body(request, OtpLogin)
    return json_response(await request.app[CODES].login(body.phone, body.code, body.locale), headers=NO_STORE)


@routes.post("/auth/token/refresh")
@openapi(summary="A new access token for a refresh token (single use; reuse revokes the login)", tags=["auth"],
         request=RefreshRequest, response=TokenOut, public=True)
async def refresh_token(request: web.Request) -> web.Response:
    body = await parse_body(request, RefreshRequest)
    return json_response(await request.app[TOKENS].refresh(body.refresh_token), headers=NO_STORE)


@routes.post("/auth/logout")
@openapi(summary="End a login: its refresh tokens stop working and its access tokens are refused", tags=["auth"],
         request=RefreshRequest, responses={204: None}, public=True)
async def logout(request: web.Request) -> web.Response:
    body = await parse_body(request, RefreshRequest)
    await request.app[TOKENS].logout(body.refresh_token)
    return web.Response(status=204)


@routes.post("/auth/keys/rotate")
@openapi(summary="Rotate the signing key (the previous key stays published)", tags=["auth"])
async def rotate_keys(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    return json_response(await request.app[KEYS].rotate())


@routes.post("/auth/staff/password")
@openapi(summary="Change my staff password (ends my other logins)", tags=["auth"], request=PasswordChange,
         responses={204: None})
async def change_password(request: web.Request) -> web.Response:
    principal = require(request, "store_staff", "store_manager", "franchisee", "hq_admin")
    if not principal.staff_id:
        raise Problem(403, "forbidden", "this endpoint is for staff accounts")
    body = await parse_body(request, PasswordChange)
    await request.app[STAFF].change_password(principal.staff_id, body.current_password, body.new_password)
    return web.Response(status=204)


short_list(routes, "/members/staff", "list_staff", summary="Staff accounts (HQ)", tags=["staff"], roles=("hq_admin",),
           items=lambda app: app[STAFF].list())


@routes.post("/members/staff")
@openapi(summary="Create a staff account (HQ)", tags=["staff"], request=NewStaff, status=201)
async def create_staff(request: web.Request) -> web.Response:
    body = await body_for(request, NewStaff, "hq_admin")
    doc = {"_id": body.id, "username": body.username, "name": body.name, "roles": sorted(set(body.roles)),
           "store_ids": sorted(set(body.store_ids)), "franchisee_id": body.franchisee_id}
    return await once(request, lambda: request.app[STAFF].create(doc, body.password))


STAFF_ID = "{staff_id:stf_[A-Za-z0-9_]+}"


@routes.post(f"/members/staff/{STAFF_ID}/disable")
@openapi(summary="Disable a staff account (HQ): no login, no refresh, its tokens refused", tags=["staff"])
async def disable_staff(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    return json_response(await request.app[STAFF].disable(request.match_info["staff_id"]))


@routes.post(f"/members/staff/{STAFF_ID}/enable")
@openapi(summary="Enable a disabled staff account again (HQ)", tags=["staff"])
async def enable_staff(request: web.Request) -> web.Response:
    require(request, "hq_admin")
    return json_response(await request.app[STAFF].enable(request.match_info["staff_id"]))


@routes.put(f"/members/staff/{STAFF_ID}/access")
@openapi(summary="Change a staff account's roles and stores (HQ); its earlier tokens are refused", tags=["staff"],
         request=StaffAccess)
async def change_staff_access(request: web.Request) -> web.Response:
    body = await body_for(request, StaffAccess, "hq_admin")
    return json_response(await request.app[STAFF].change_access(request.match_info["staff_id"], body.roles,
                                                                body.store_ids, body.franchisee_id))


@routes.post(f"/members/staff/{STAFF_ID}/password-reset")
@openapi(summary="Force a password reset (HQ): a temporary password, every login ended", tags=["staff"],
         request=PasswordReset)
async def reset_staff_password(request: web.Request) -> web.Response:
    body = await body_for(request, PasswordReset, "hq_admin")
    return json_response(await request.app[STAFF].force_reset(request.match_info["staff_id"],
                                                              body.temporary_password))


@routes.get("/auth/internal/revocations")
async def revocations(request: web.Request) -> web.Response:
    """Ended sessions and accounts whose earlier tokens no longer count: the gateway polls it (Revocations)."""
    require(request, scope="membership:revocations")
    try:
        since_ms = max(0, int(request.query.get("since_ms", "0")))
    except ValueError:
        raise Problem(400, "bad-request", "since_ms must be an integer (epoch milliseconds)") from None
    return json_response(await request.app[TOKENS].revocations_since(since_ms), headers=NO_STORE)
