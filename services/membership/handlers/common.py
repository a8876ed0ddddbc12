"""What every membership handler module shares: who is asking, which members they may see, answering once."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from libs.auth import Principal, require
from libs.idempotency import create_once
from libs.problems import Problem
from libs.service import MONGO
from services.membership.usecases import MEMBERS

MEMBER_ID = "{member_id:mbr_[A-Za-z0-9_]+}"
STAFF_ROLES = ("store_staff", "store_manager", "hq_admin")


def customer(request: web.Request) -> str:
    """The calling member's id (a member token is required)."""
    principal = require(request, "customer")
    if not principal.member_id:
        raise Problem(403, "forbidden", "this endpoint is for members")
    return principal.member_id


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


async def once(request: web.Request, make: Callable[[], Awaitable[dict[str, Any]]],
               status: Callable[[dict[str, Any]], int] = lambda answer: 201) -> web.Response:
    """Answer a creating POST once per `Idempotency-Key`: `make()` calls one use case."""
    async def create() -> tuple[int, dict[str, Any]]:
        answer = await make()
        return status(answer), answer

    return await create_once(request.app[MONGO], request, create)
