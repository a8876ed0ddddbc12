"""Which events notify whom, on which channels, in which category. Pure data and functions, no I/O."""
from __future__ import annotations

from dataclasses import dataclass

# Categories decide how preferences apply:
#  transactional: always sent (a member cannot switch it off; channel choices only pick the route);
#  service:       useful account news (coupon issued, points expiring); a member may switch it off; daily cap;
#  marketing:     needs marketing consent; deferred during quiet hours; daily cap;
#  operations:    messages to staff and franchisees about their stores; no member preferences apply.
TRANSACTIONAL = "transactional"
SERVICE = "service"
MARKETING = "marketing"
OPERATIONS = "operations"
CATEGORIES = (TRANSACTIONAL, SERVICE, MARKETING, OPERATIONS)
MEMBER_CATEGORIES = (SERVICE, MARKETING)  # the ones a member can switch on and off

SMS, WECHAT, EMAIL, PUSH, WEBHOOK, SINK = "sms", "wechat", "email", "push", "webhook", "sink"
PERSON_CHANNELS = (SMS, WECHAT, EMAIL, PUSH)
CHANNELS = (*PERSON_CHANNELS, WEBHOOK, SINK)
LOCALES = ("zh-CN", "en")
DEFAULT_LOCALE = "zh-CN"

# Audiences: who a notification goes to, resolved from the event's data.
MEMBER = "member"          # data.member_id (+ contact fields the event carries)
PHONE = "phone"            # data.phone only (OTP: the person may not be a member yet)
STORE_MANAGERS = "store"   # the managers of data.location_id
FRANCHISEE = "franchisee"  # data.franchisee_id (or party_id)


@dataclass(frozen=True)
class Rule:
    category: str
    audience: str
    channels: tuple[str, ...]  # preferred routes, in order; the first addressable one is the fallback


# Every event type of the suite (docs/ARCHITECTURE.md, plus the ones notifications needs) that produces a message for a person.
RULES: dict[str, Rule] = {
    "orders.order.confirmed": Rule(TRANSACTIONAL, MEMBER, (PUSH, EMAIL)),
    "orders.order.ready_for_pickup": Rule(TRANSACTIONAL, MEMBER, (SMS, PUSH)),
    "orders.pickup_code.reissued": Rule(TRANSACTIONAL, MEMBER, (SMS, PUSH)),
    "orders.order.shipped": Rule(TRANSACTIONAL, MEMBER, (PUSH, SMS)),
    "orders.order.cancelled": Rule(TRANSACTIONAL, MEMBER, (PUSH, SMS)),
    "orders.order.refunded": Rule(TRANSACTIONAL, MEMBER, (PUSH, EMAIL)),
    "orders.return.received": Rule(TRANSACTIONAL, MEMBER, (PUSH,)),
    "membership.otp.requested": Rule(TRANSACTIONAL, PHONE, (SMS,)),
    "membership.member.registered": Rule(SERVICE, MEMBER, (PUSH, WECHAT)),
    "membership.coupon.issued": Rule(SERVICE, MEMBER, (PUSH, WECHAT)),
    "membership.points.expiring": Rule(SERVICE, MEMBER, (PUSH, SMS)),
    "membership.tier.changed": Rule(SERVICE, MEMBER, (PUSH,)),
    "membership.member.dormant": Rule(MARKETING, MEMBER, (SMS, WECHAT)),
    "stock.level_low": Rule(OPERATIONS, STORE_MANAGERS, (PUSH, EMAIL)),
    "settlement.statement.closed": Rule(OPERATIONS, FRANCHISEE, (EMAIL, PUSH)),
}

# Campaign messages are marketing, sent through a stored template whose key starts with this prefix.
CAMPAIGN_PREFIX = "campaign."
CAMPAIGN_RULE = Rule(MARKETING, MEMBER, (SMS, WECHAT, PUSH))

# Every event type a webhook may subscribe to (the suite's events plus the additions above).
WEBHOOK_EVENT_TYPES: tuple[str, ...] = (
    "catalog.product.published", "catalog.price.changed",
    "stock.reserved", "stock.reservation_rejected", "stock.released", "stock.committed", "stock.level_low",
    "orders.order.placed", "orders.order.confirmed", "orders.order.allocated", "orders.order.ready_for_pickup",
    "orders.order.shipped", "orders.order.picked_up", "orders.order.completed", "orders.order.cancelled",
    "orders.return.requested", "orders.return.received", "orders.order.refunded",
    "membership.member.registered", "membership.member.merged", "membership.points.changed",
    "membership.points.expiring", "membership.coupon.issued", "membership.tier.changed",
    "membership.member.dormant",
    "notifications.delivery.failed",
    "settlement.entries.posted", "settlement.statement.closed",
)
# Never offered to webhooks: one-time passwords and reissued pickup codes are secrets for one person only.
PRIVATE_EVENT_TYPES = frozenset({"membership.otp.requested", "orders.pickup_code.reissued"})

# Messages that carry a one-time secret. The event does not (every consumer and the audit queue see events): the
# message is stored with CODE_MASK in the code's place, and the code is fetched from its owner when the message
# is sent. event type -> (template variable, owning service, the event field that names the code).
SECRET_CODES: dict[str, tuple[str, str, str]] = {
    "orders.order.ready_for_pickup": ("pickup_code", "orders", "order_id"),
    "orders.pickup_code.reissued": ("pickup_code", "orders", "order_id"),
    "membership.otp.requested": ("code", "membership", "phone"),
}
CODE_MASK = "••••••"


def code_ref(event_type: str, data: dict) -> dict | None:
    """Where the code of this message is fetched from when it is sent (None: it has no code)."""
    if event_type not in SECRET_CODES:
        return None
    _, owner, key_field = SECRET_CODES[event_type]
    nested = data.get("contact") if isinstance(data.get("contact"), dict) else {}
    key = data.get(key_field) or nested.get(key_field)
    return {"owner": owner, "key": key} if isinstance(key, str) and key else None


def masked(event_type: str, data: dict) -> dict:
    """The event data to render the stored message from: the code's variable holds CODE_MASK, whatever the event
    carried (an older producer may still send a code; it is never stored)."""
    if event_type not in SECRET_CODES:
        return data
    return {**data, SECRET_CODES[event_type][0]: CODE_MASK}


# Every key the service's queue is bound to.
CONSUMED_EVENT_TYPES: tuple[str, ...] = tuple(sorted(set(WEBHOOK_EVENT_TYPES) | set(RULES)))


def template_keys() -> list[tuple[str, str]]:
    """(template type, channel) pairs that need a template."""
    keys = [(event_type, channel) for event_type, rule in RULES.items() for channel in rule.channels]
    keys += [(CAMPAIGN_PREFIX + "announcement", channel) for channel in CAMPAIGN_RULE.channels]
    return keys


def is_template_type(name: str) -> bool:
    return name in RULES or (name.startswith(CAMPAIGN_PREFIX) and 9 < len(name) <= 80 and name.replace(
        ".", "").replace("_", "").replace("-", "").isalnum())


def rule_for_template_type(name: str) -> Rule | None:
    if name in RULES:
        return RULES[name]
    if name.startswith(CAMPAIGN_PREFIX):
        return CAMPAIGN_RULE
    return None


def event_catalog() -> dict:
    """The event types a webhook may subscribe to, and what each notified event means to a person."""
    return {"webhook_event_types": list(WEBHOOK_EVENT_TYPES), "channels": list(CHANNELS),
            "categories": list(CATEGORIES), "locales": list(LOCALES),
            "notified": {t: {"category": r.category, "audience": r.audience, "channels": list(r.channels)}
                         for t, r in RULES.items()}}
