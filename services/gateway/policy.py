"""The route policy table: who may call which method and path through the gateway. Pure, unit-tested.

Paths are the service paths (what follows `/api/v1`). The first matching rule wins. A rule says whether the
route is public, open to any authenticated caller, open to some roles only, or never routed; which rate-limit
class it belongs to; and how long its upstream may take.

The gateway is the coarse gate. Services still enforce roles and ownership themselves (a customer asking for
another member's order gets 404 from orders), so a route that is not listed here is open to any authenticated
caller and left to its service. Public routes are listed explicitly: nothing is public by accident.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum


class Access(Enum):
    PUBLIC = "public"
    AUTHENTICATED = "authenticated"
    ROLES = "roles"
    DENIED = "denied"  # never routed (answered 404 as if it did not exist)


class LimitClass(str, Enum):
    DEFAULT = "default"
    # Guessable secrets: budgets per target (the phone, the username, the order) and per requester and target;
    # the client address only as a coarse guard (see limits.py).
    OTP_SEND = "otp_send"
    OTP_LOGIN = "otp_login"
    STAFF_LOGIN = "staff_login"
    PICKUP = "pickup"
    # Order placement: one place in the queue per member.
    ORDER_CREATE = "order_create"


ANY_METHOD = frozenset({"*"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ_METHODS = frozenset({"GET", "HEAD"})

STAFF = frozenset({"store_staff", "store_manager", "hq_admin"})
ADMIN = frozenset({"hq_admin"})


@dataclass(frozen=True)
class RoutePolicy:
    methods: frozenset[str]
    pattern: str
    access: Access
    roles: frozenset[str] = frozenset()
    limit: LimitClass = LimitClass.DEFAULT
    timeout_s: float | None = None
    regex: re.Pattern = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", compile_pattern(self.pattern))

    def allows_method(self, method: str) -> bool:
        return "*" in self.methods or method in self.methods


def compile_pattern(pattern: str) -> re.Pattern:
    """`/orders/{order_id}/pay` -> regex with named groups; a trailing `/**` matches the rest (or nothing)."""
    tail = ""
    if pattern.endswith("/**"):
        pattern, tail = pattern[:-3], "(?:/.*)?"
    parts = re.split(r"(\{[a-z_]+\})", pattern)
    body = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(f"^{body}{tail}/?$")


def public(methods, pattern: str, **kw) -> RoutePolicy:
    return RoutePolicy(frozenset(methods), pattern, Access.PUBLIC, **kw)


def roles(methods, pattern: str, allowed: frozenset[str], **kw) -> RoutePolicy:
    return RoutePolicy(frozenset(methods), pattern, Access.ROLES, allowed, **kw)


def authenticated(methods, pattern: str, **kw) -> RoutePolicy:
    return RoutePolicy(frozenset(methods), pattern, Access.AUTHENTICATED, **kw)


def denied(pattern: str) -> RoutePolicy:
    return RoutePolicy(ANY_METHOD, pattern, Access.DENIED)


GET = ("GET", "HEAD")
POST = ("POST",)

POLICIES: tuple[RoutePolicy, ...] = (
    # --- membership: identity -------------------------------------------------------------------
    # Client credentials for services are for the internal network only: brute-forcing service secrets
    # through the front door must not even be possible.
    denied("/auth/service/**"),
    public(GET, "/auth/jwks"),
    public(POST, "/auth/member/otp", limit=LimitClass.OTP_SEND),
    public(POST, "/auth/member/token", limit=LimitClass.OTP_LOGIN),
    public(POST, "/auth/staff/token", limit=LimitClass.STAFF_LOGIN),
    # A refresh token is 256 random bits used once: nothing to guess, and every app refreshes hourly, so it
    # has only the address's flood guard (behind one carrier NAT thousands refresh every hour).
    public(POST, "/auth/token/refresh"),
    # Logging out needs only the refresh token: an app whose access token has expired can still end its login.
    public(POST, "/auth/logout"),
    roles(POST, "/auth/keys/**", ADMIN),
    roles(POST, "/members/scan", frozenset({"customer"}) | STAFF),
    roles(ANY_METHOD, "/members/me/**", frozenset({"customer"})),
    roles(GET, "/members/stores/{store_id}/analytics", frozenset({"store_manager", "franchisee", "hq_admin"})),
    roles(ANY_METHOD, "/members/**", STAFF),
    roles(ANY_METHOD, "/membership/**", STAFF),
    # --- catalog: browsing is public, writes are HQ's ----------------------------------------------
    public(GET, "/catalog/products"),
    public(GET, "/catalog/products/{product_id}"),
    public(GET, "/catalog/skus/by-code/{code}"),
    public(GET, "/catalog/skus/{sku_id}"),
    roles(GET, "/catalog/skus/{sku_id}/prices", ADMIN),  # price history, cost included: HQ only
    public(GET, "/catalog/categories"),
    public(GET, "/catalog/categories/{category_id}"),
    roles(WRITE_METHODS, "/catalog/**", ADMIN),
    # --- stock: availability and store locations are public ----------------------------------------
    public(GET, "/stock/availability", timeout_s=5.0),
    public(GET, "/stock/locations"),
    public(GET, "/stock/locations/{location_id}"),
    roles(WRITE_METHODS, "/stock/locations/**", ADMIN),
    # A clerk's bulk movement waits for a manager of the store (stock checks which store).
    roles(POST, "/stock/approvals/{approval_id}/**", frozenset({"store_manager", "hq_admin"})),
    roles(ANY_METHOD, "/stock/**", STAFF),
    # --- orders ------------------------------------------------------------------------------------
    # The payment provider calls back without a member token; orders verifies the provider's signature.
    public(POST, "/orders/payments/callback"),
    roles(POST, "/orders", frozenset({"customer"}) | STAFF, limit=LimitClass.ORDER_CREATE, timeout_s=15.0),
    # The pickup code is a short secret: a few attempts per order, and a generous budget per store counter.
    roles(POST, "/orders/{order_id}/pickup", STAFF, limit=LimitClass.PICKUP),
    roles(POST, "/orders/{order_id}/pickup-code/**", frozenset({"store_manager", "hq_admin"})),
    roles(POST, "/orders/{order_id}/ready-for-pickup", STAFF),
    roles(POST, "/orders/{order_id}/ship", STAFF),
    roles(POST, "/orders/{order_id}/pay", frozenset({"customer"}) | STAFF, timeout_s=15.0),
    # Only the order's member asks for the return code a counter needs (orders checks the member).
    roles(POST, "/orders/{order_id}/return-code", frozenset({"customer"})),
    roles(POST, "/orders/{order_id}/returns/**", frozenset({"customer"}) | STAFF, timeout_s=15.0),
    authenticated(ANY_METHOD, "/orders/**"),
    # --- notifications -------------------------------------------------------------------------------
    # Deliveries and preferences: each caller sees their own (notifications filters); the rest is HQ's.
    authenticated(GET, "/notifications/deliveries/**"),
    authenticated(ANY_METHOD, "/notifications/me/**"),
    roles(ANY_METHOD, "/notifications/**", ADMIN),
    # --- settlement: statements and reports can be long ------------------------------------------------
    roles(ANY_METHOD, "/settlement/**", frozenset({"franchisee", "store_manager", "hq_admin"}), timeout_s=30.0),
)

DEFAULT_POLICY = RoutePolicy(ANY_METHOD, "/**", Access.AUTHENTICATED)


_INDEXES: dict[int, tuple[tuple[RoutePolicy, ...], dict[str, tuple[RoutePolicy, ...]]]] = {}


def _first_segment(path: str) -> str:
    return path.split("/", 2)[1] if path.startswith("/") else ""


def _candidates(policies: tuple[RoutePolicy, ...], path: str) -> tuple[RoutePolicy, ...]:
    """The rules that can match `path`, found by its first segment (a request scans a handful of rules, not the
    table); the table's order is kept, so the first match is the one a full scan would find."""
    cached = _INDEXES.get(id(policies))
    if cached is None or cached[0] is not policies:
        literal = {_first_segment(p.pattern) for p in policies if "{" not in _first_segment(p.pattern)
                   and "*" not in _first_segment(p.pattern)}
        unanchored = tuple(p for p in policies if _first_segment(p.pattern) not in literal)
        index = {segment: tuple(p for p in policies if _first_segment(p.pattern) == segment or p in unanchored)
                 for segment in literal}
        cached = (policies, index | {"": unanchored})
        _INDEXES[id(policies)] = cached
    return cached[1].get(_first_segment(path), cached[1][""])


def match(method: str, path: str, policies: tuple[RoutePolicy, ...] = POLICIES) -> tuple[RoutePolicy, dict[str, str]]:
    """The policy of `method path` and the path parameters it captured (the default policy when none matches)."""
    lookup = "GET" if method == "HEAD" else method
    for policy in _candidates(policies, path):
        if not policy.allows_method(lookup) and not policy.allows_method(method):
            continue
        found = policy.regex.match(path)
        if found:
            return policy, found.groupdict()
    return DEFAULT_POLICY, {}


BREAKER_CLASSES = ("default", "login", "slow")
LOGIN_CLASSES = frozenset({LimitClass.OTP_SEND, LimitClass.OTP_LOGIN, LimitClass.STAFF_LOGIN})


def breaker_class(policy: RoutePolicy) -> str:
    """Routes that fail for their own reasons get their own breaker per upstream: a flood of password logins
    (each an expensive hash) or a slow report must not pause the rest of that service (JWKS, member login,
    checkout) for everyone."""
    if policy.limit in LOGIN_CLASSES:
        return "login"
    if policy.timeout_s is not None and policy.timeout_s > 10:
        return "slow"
    return "default"


def breaker_name(service: str, breaker_class_: str) -> str:
    """The breaker's name (its metric label): the service itself for its default routes."""
    return service if breaker_class_ == "default" else f"{service}/{breaker_class_}"


def is_internal(path: str) -> bool:
    """Service-to-service routes (`/<segment>/internal/...`) are never routed, whatever their case."""
    return any(segment.lower() == "internal" for segment in path.split("/"))


def has_dot_segment(path: str) -> bool:
    return any(segment in (".", "..") for segment in path.split("/"))
