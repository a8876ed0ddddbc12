"""What every membership handler module shares: who is asking, which members they may see, answering once."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from aiohttp import web

from libs.auth import Principal, require
from libs.http import json_response, parse_body
from libs.idempotency import create_once
from libs.openapi import openapi
from libs.problems import Problem
from libs.service import MONGO
from services.membership.usecases import MEMBERS

MEMBER_ID = "{member_id:mbr_[A-Za-z0-9_]+}"
STAFF_ROLES = ("store_staff", "store_manager", "hq_admin")
M = TypeVar("M", bound=BaseModel)


def customer(request: web.Request) -> str:
    """The calling member's id (a member token is required)."""
    principal = require(request, "customer")
    if not principal.member_id:
        raise Problem(403, "forbidden", "this endpoint is for members")
    return principal.member_id


async def my_body(request: web.Request, model: type[M]) -> tuple[str, M]:
    """(the calling member's id, the parsed body)."""
    member_id = customer(request)
    return member_id, await parse_body(request, model)


async def body_for(request: web.Request, model: type[M], *roles: str) -> M:
    """The parsed body, for a caller holding one of `roles`."""
    require(request, *roles)
    return await parse_body(request, model)


def can_see_member(principal: Principal, member: dict) -> bool:
    """HQ sees everyone; store staff see the members bound to their stores (others are 404, not 403)."""
    return principal.is_admin or (member.get("bound_store_id") in principal.store_ids)


async def visible_member(request: web.Request, roles=STAFF_ROLES) -> dict:
    """The member of the path, if the calling staff may see them (404 otherwise)."""
    principal = require(request, *roles)
    member = await request.app[MEMBERS].get(request.match_info["member_id"])
    if not can_see_member(principal, member):
        raise Problem(404, "member-not-found", "member not found")
    return member


def listing(items: list[Any]) -> dict[str, Any]:
    """A list that fits on one page, in the shape of every list."""
    return {"items": items, "next_cursor": None}


def short_list(routes: web.RouteTableDef, path: str, name: str, *, summary: str, tags: list[str],
               roles: tuple[str, ...], items: Callable[[web.Application], Awaitable[list[Any]]]) -> None:
    """A GET of a list that fits on one page (templates, campaigns, staff), readable by `roles` only."""
    async def handler(request: web.Request) -> web.Response:
        require(request, *roles)
        return json_response(listing(await items(request.app)))

    handler.__name__ = handler.__qualname__ = name
    routes.get(path)(openapi(summary=summary, tags=tags)(handler))


async def once(request: web.Request, make: Callable[[], Awaitable[dict[str, Any]]],
               status: Callable[[dict[str, Any]], int] = lambda answer: 201) -> web.Response:
    """Answer a creating POST once per `Idempotency-Key`: `make()` calls one use case."""
    async def create() -> tuple[int, dict[str, Any]]:
        answer = await make()
        return status(answer), answer

    return await create_once(request.app[MONGO], request, create)
