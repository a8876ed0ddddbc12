"""HTTP entrypoints: thin; they parse, check who is asking, call one use case and answer.

Public routes: /auth/... and /members/... (through the gateway as /api/v1/...). Internal routes for other
services: /members/internal/... (service role only; never routed by the gateway).
"""
from services.membership.handlers import auth, coupons, loyalty, members

routes = [*auth.routes, *members.routes, *loyalty.routes, *coupons.routes]

__all__ = ["routes"]
