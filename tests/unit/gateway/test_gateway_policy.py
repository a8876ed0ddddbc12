"""The route policy table: public routes are exactly the listed ones; roles and limit classes per route."""
from __future__ import annotations

import pytest

from services.gateway.policy import (DEFAULT_POLICY, Access, LimitClass, compile_pattern, has_dot_segment,
                                     is_internal, match)
from services.gateway.routing import resolve


@pytest.mark.parametrize("method, path", [
    ("GET", "/catalog/products"), ("GET", "/catalog/products/prd_1"), ("HEAD", "/catalog/products/prd_1"),
    ("GET", "/catalog/skus/by-code/6901234567890"), ("GET", "/stock/availability"), ("GET", "/stock/locations"),
    ("GET", "/stock/locations/loc_1"), ("POST", "/auth/member/otp"), ("POST", "/auth/member/token"),
    ("POST", "/auth/staff/token"), ("GET", "/auth/jwks"), ("POST", "/orders/payments/callback"),
])
def test_public_routes(method, path):
    policy, _ = match(method, path)
    assert policy.access is Access.PUBLIC


@pytest.mark.parametrize("method, path", [
    ("POST", "/catalog/products"), ("DELETE", "/catalog/products/prd_1"), ("POST", "/stock/locations"),
    ("POST", "/stock/movements"), ("GET", "/orders/ord_1"), ("POST", "/orders"), ("POST", "/orders/ord_1/pay"),
    ("GET", "/members/me"), ("GET", "/members/mbr_2"), ("GET", "/settlement/statements/stm_1"),
    ("GET", "/notifications/deliveries"), ("GET", "/catalog/products/prd_1/cost"), ("GET", "/stock/levels"),
    ("POST", "/auth/member/otp/extra"), ("GET", "/orders/payments/callback"),
])
def test_everything_else_needs_a_token(method, path):
    policy, _ = match(method, path)
    assert policy.access in (Access.AUTHENTICATED, Access.ROLES), (method, path)


@pytest.mark.parametrize("method, path, allowed, refused", [
    ("POST", "/catalog/products", "hq_admin", "customer"),
    ("POST", "/catalog/products", "hq_admin", "store_manager"),
    ("POST", "/orders/ord_1/pickup", "store_staff", "customer"),
    ("POST", "/orders/ord_1/ready-for-pickup", "store_manager", "customer"),
    ("GET", "/members/me/points", "customer", "store_staff"),
    ("GET", "/members/mbr_9", "store_staff", "customer"),
    ("GET", "/settlement/statements", "franchisee", "customer"),
    ("GET", "/settlement/statements", "hq_admin", "store_staff"),
    ("POST", "/stock/movements", "store_staff", "franchisee"),
    ("GET", "/stock/levels", "store_manager", "customer"),
    ("PUT", "/notifications/templates/order/sms/zh", "hq_admin", "store_manager"),
    ("GET", "/catalog/skus/sku_1/prices", "hq_admin", "customer"),
    ("POST", "/auth/keys/rotate", "hq_admin", "customer"),
    ("GET", "/members/stores/loc_1/analytics", "franchisee", "store_staff"),
])
def test_role_rules(method, path, allowed, refused):
    policy, _ = match(method, path)
    assert policy.access is Access.ROLES
    assert allowed in policy.roles and refused not in policy.roles


def test_limit_classes_and_timeouts():
    assert match("POST", "/auth/member/otp")[0].limit is LimitClass.OTP_SEND
    assert match("POST", "/auth/member/token")[0].limit is LimitClass.OTP_LOGIN
    assert match("POST", "/auth/staff/token")[0].limit is LimitClass.STAFF_LOGIN
    assert match("POST", "/auth/token/refresh")[0].limit is LimitClass.DEFAULT
    pickup, params = match("POST", "/orders/ord_42/pickup")
    assert pickup.limit is LimitClass.PICKUP and params == {"order_id": "ord_42"}
    assert match("POST", "/orders")[0].limit is LimitClass.ORDER_CREATE
    assert match("GET", "/orders")[0].limit is LimitClass.DEFAULT
    assert match("GET", "/settlement/statements")[0].timeout_s == 30.0
    assert match("GET", "/catalog/products")[0].timeout_s is None  # the configured default


def test_own_records_are_left_to_the_service():
    assert match("GET", "/notifications/deliveries")[0].access is Access.AUTHENTICATED
    assert match("PUT", "/notifications/me/preferences")[0].access is Access.AUTHENTICATED
    assert match("POST", "/orders/ord_1/cancel")[0].access is Access.AUTHENTICATED


def test_service_credentials_are_never_routed():
    assert match("POST", "/auth/service/token")[0].access is Access.DENIED


def test_unlisted_segment_falls_to_authenticated_default():
    assert match("GET", "/somewhere/else") == (DEFAULT_POLICY, {})


@pytest.mark.parametrize("path", ["/catalog/internal/quote", "/stock/Internal/x", "/orders/x/INTERNAL",
                                  "/members/internal"])
def test_internal_paths(path):
    assert is_internal(path)


@pytest.mark.parametrize("path", ["/catalog/internals", "/catalog/products/internal-tea", "/orders"])
def test_not_internal(path):
    assert not is_internal(path)


def test_dot_segments():
    assert has_dot_segment("/catalog/../orders") and has_dot_segment("/catalog/./x")
    assert not has_dot_segment("/catalog/products/a..b")


def test_patterns():
    regex = compile_pattern("/orders/{order_id}/returns/**")
    assert regex.match("/orders/ord_1/returns").groupdict() == {"order_id": "ord_1"}
    assert regex.match("/orders/ord_1/returns/ret_1/receive")
    assert not regex.match("/orders/ord_1/returnsx")
    assert not compile_pattern("/orders/{order_id}").match("/orders/a/b")


def test_resolve():
    assert resolve("/api/v1/auth/member/otp") == ("membership", "/auth/member/otp")
    assert resolve("/api/v1/members/me") == ("membership", "/members/me")
    assert resolve("/api/v1/catalog") == ("catalog", "/catalog")
    assert resolve("/api/v1/nope/x") is None and resolve("/api/v2/catalog/x") is None


def test_segment_index_gives_the_same_answer_as_a_full_scan():
    from services.gateway.policy import POLICIES
    paths = ["/catalog/products", "/catalog/products/p/skus", "/orders", "/orders/o/pickup", "/orders/o/returns/r/x",
             "/members/me", "/members/mbr_1", "/auth/member/otp", "/auth/service/token", "/stock/levels",
             "/settlement/statements", "/notifications/me/preferences", "/nothing", "/", ""]
    for method in ("GET", "POST", "HEAD", "PATCH", "DELETE"):
        for path in paths:
            expected = next(((p, p.regex.match(path).groupdict()) for p in POLICIES
                             if (p.allows_method("GET" if method == "HEAD" else method) or p.allows_method(method))
                             and p.regex.match(path)), (DEFAULT_POLICY, {}))
            assert match(method, path) == expected, (method, path)


def test_breaker_classes():
    from services.gateway.policy import breaker_class, breaker_name
    assert breaker_class(match("POST", "/auth/staff/token")[0]) == "login"
    assert breaker_class(match("POST", "/auth/member/otp")[0]) == "login"
    assert breaker_class(match("GET", "/auth/jwks")[0]) == "default"
    assert breaker_class(match("GET", "/settlement/statements")[0]) == "slow"
    assert breaker_name("membership", "default") == "membership"
    assert breaker_name("membership", "login") == "membership/login"
