"""Message templates: the defaults seeded at start-up and sandboxed rendering. Pure (no I/O).

Templates are Jinja2 rendered in `SandboxedEnvironment`, so an admin-edited template cannot reach Python
internals (attribute access to `__class__`, `mro`, ... raises SecurityError). The context is the event's
`data` (also spread at top level), `event` (id, type, occurred_at) and `recipient` (name, locale).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment

from services.notifications.domain.rules import DEFAULT_LOCALE, EMAIL, PUSH, SMS, WECHAT

MAX_TEMPLATE_CHARS = 4000
MAX_RENDERED_CHARS = 8000


class TemplateProblem(ValueError):
    """A template that does not compile or does not render."""


def yuan(fen: Any) -> str:
    """Integer fen as a price for people: 12345 -> ¥123.45."""
    try:
        value = int(fen)
    except (TypeError, ValueError):
        return str(fen)
    sign = "-" if value < 0 else ""
    value = abs(value)
    return f"{sign}¥{value // 100}.{value % 100:02d}"


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=False, undefined=Undefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["yuan"] = yuan
    return env


_ENV = _environment()


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def check(subject: str, body: str) -> None:
    """Raise TemplateProblem when a template is too long or does not compile."""
    for name, source in (("subject", subject), ("body", body)):
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateProblem(f"{name} is longer than {MAX_TEMPLATE_CHARS} characters")
        try:
            _ENV.from_string(source)
        except TemplateError as exc:
            raise TemplateProblem(f"{name} does not compile: {exc}") from None


def render(subject: str, body: str, context: dict[str, Any]) -> Rendered:
    """Render a template pair; any error (syntax, sandbox violation) is a TemplateProblem."""
    try:
        rendered_subject = _ENV.from_string(subject).render(context).strip()
        rendered_body = _ENV.from_string(body).render(context).strip()
    except TemplateError as exc:  # SecurityError is a TemplateError
        raise TemplateProblem(f"template does not render: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a user template may fail in arbitrary ways (e.g. 1/0)
        raise TemplateProblem(f"template does not render: {type(exc).__name__}: {exc}") from None
    return Rendered(rendered_subject[:200], rendered_body[:MAX_RENDERED_CHARS])


def context_for(event_type: str, event_id: str, occurred_at: str, data: dict[str, Any],
                recipient_name: str | None, locale: str) -> dict[str, Any]:
    # Event fields first, then the names the templates rely on, so an event cannot shadow them.
    return {**data, "data": data, "event": {"id": event_id, "type": event_type, "occurred_at": occurred_at},
            "recipient": {"name": recipient_name or "", "locale": locale}}


# (template type, channel) -> locale -> (subject, body). Short texts for sms/push/wechat, fuller for email.
_ORDER_REF = "{{ order_id }}"
DEFAULTS: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}


def _add(template_type: str, channels: tuple[str, ...], zh: tuple[str, str], en: tuple[str, str]) -> None:
    for channel in channels:
        DEFAULTS[(template_type, channel)] = {"zh-CN": zh, "en": en}


_add("orders.order.confirmed", (PUSH, EMAIL),
     ("订单已确认", "您的订单 " + _ORDER_REF + " 已支付成功{% if totals %}，实付 {{ totals.total | yuan }}{% endif %}。我们正在为您备货。"),
     ("Order confirmed", "Your order " + _ORDER_REF + " is paid{% if totals %} ({{ totals.total | yuan }}){% endif %}. We are preparing it."))
_add("orders.order.ready_for_pickup", (SMS, PUSH),
     ("订单可以取货了", "【LOOP】您的订单 " + _ORDER_REF + " 已可到店自提{% if store_name %}（{{ store_name }}）{% endif %}，取货码 {{ pickup_code }}，请凭码取货。"),
     ("Your order is ready for pickup", "[LOOP] Order " + _ORDER_REF + " is ready for pickup{% if store_name %} at {{ store_name }}{% endif %}. Pickup code: {{ pickup_code }}."))
_add("orders.order.shipped", (PUSH, SMS),
     ("订单已发货", "【LOOP】您的订单 " + _ORDER_REF + " 已发货{% if carrier %}，{{ carrier }}{% endif %}{% if tracking_number %} 运单号 {{ tracking_number }}{% endif %}。"),
     ("Your order has shipped", "[LOOP] Order " + _ORDER_REF + " has shipped{% if carrier %} with {{ carrier }}{% endif %}{% if tracking_number %}, tracking {{ tracking_number }}{% endif %}."))
_add("orders.order.cancelled", (PUSH, SMS),
     ("订单已取消", "【LOOP】您的订单 " + _ORDER_REF + " 已取消。{% if refund_amount %}{{ refund_amount | yuan }} 将原路退回。{% endif %}"),
     ("Order cancelled", "[LOOP] Order " + _ORDER_REF + " was cancelled.{% if refund_amount %} {{ refund_amount | yuan }} will be refunded.{% endif %}"))
_add("orders.order.refunded", (PUSH, EMAIL),
     ("退款已完成", "您的订单 " + _ORDER_REF + " 已退款{% if refund_amount %} {{ refund_amount | yuan }}{% endif %}，款项将原路退回。"),
     ("Refund completed", "Order " + _ORDER_REF + " has been refunded{% if refund_amount %} ({{ refund_amount | yuan }}){% endif %}. The money goes back the way you paid."))
_add("orders.return.received", (PUSH,),
     ("退货已收到", "门店已收到订单 " + _ORDER_REF + " 的退货{% if refund_amount %}，{{ refund_amount | yuan }} 退款处理中{% endif %}。"),
     ("Return received", "The store received your return for order " + _ORDER_REF + "{% if refund_amount %}; your refund of {{ refund_amount | yuan }} is on its way{% endif %}."))
_add("membership.otp.requested", (SMS,),
     ("验证码", "【LOOP】您的验证码是 {{ code }}，{{ ((expires_in or 300) // 60) }} 分钟内有效。请勿告诉他人。"),
     ("Verification code", "[LOOP] Your verification code is {{ code }}. It expires in {{ ((expires_in or 300) // 60) }} minutes. Never share it."))
_add("membership.member.registered", (PUSH, WECHAT),
     ("欢迎加入 LOOP", "欢迎成为 LOOP 会员{% if name %}，{{ name }}{% endif %}！"),
     ("Welcome to LOOP", "Welcome to LOOP{% if name %}, {{ name }}{% endif %}!"))
_add("membership.coupon.issued", (PUSH, WECHAT),
     ("您收到一张优惠券", "您收到一张优惠券{% if name %}「{{ name }}」{% endif %}{% if valid_until %}，有效期至 {{ valid_until[:10] }}{% endif %}。"),
     ("You received a coupon", "You received a coupon{% if name %} \"{{ name }}\"{% endif %}{% if valid_until %}, valid until {{ valid_until[:10] }}{% endif %}."))
_add("membership.points.expiring", (PUSH, SMS),
     ("积分即将过期", "【LOOP】您有 {{ points }} 积分将于 {{ (expires_at or '')[:10] }} 过期，快来使用吧。"),
     ("Points expiring soon", "[LOOP] {{ points }} of your points expire on {{ (expires_at or '')[:10] }}. Use them before then."))
_add("membership.tier.changed", (PUSH,),
     ("会员等级变更", "您的会员等级已变更为 {{ to_tier }}。"),
     ("Your tier changed", "Your membership tier is now {{ to_tier }}."))
_add("membership.member.dormant", (SMS, WECHAT),
     ("好久不见", "【LOOP】好久不见！新品已到店，欢迎回来逛逛。回复 TD 退订"),
     ("We miss you", "[LOOP] It has been a while! New arrivals are in store. Reply STOP to opt out"))
_add("stock.level_low", (PUSH, EMAIL),
     ("库存不足提醒", "门店 {{ location_id }} 的 {{ sku_id }} 库存仅剩 {{ available if available is defined else on_hand }} 件，请及时补货。"),
     ("Low stock", "Store {{ location_id }}: {{ sku_id }} is down to {{ available if available is defined else on_hand }} units. Please reorder."))
_add("settlement.statement.closed", (EMAIL, PUSH),
     ("结算单已出", "结算单 {{ statement_id }}（{{ (period_start or '')[:10] }} 至 {{ (period_end or '')[:10] }}）已出账{% if net_amount is defined %}，应结金额 {{ net_amount | yuan }}{% endif %}。"),
     ("Statement closed", "Statement {{ statement_id }} ({{ (period_start or '')[:10] }} to {{ (period_end or '')[:10] }}) is closed{% if net_amount is defined %}; amount due {{ net_amount | yuan }}{% endif %}."))
_add("orders.pickup_code.reissued", (SMS, PUSH),
     ("新的取货码", "【LOOP】您的订单 " + _ORDER_REF + " 的取货码已更新为 {{ pickup_code }}，旧取货码作废。"),
     ("New pickup code", "[LOOP] Order " + _ORDER_REF + " has a new pickup code: {{ pickup_code }}. The old code no longer works."))
_add("campaign.announcement", (SMS, WECHAT, PUSH),
     ("{{ headline or 'LOOP 新消息' }}", "【LOOP】{{ message or headline or '' }} 回复 TD 退订"),
     ("{{ headline or 'News from LOOP' }}", "[LOOP] {{ message or headline or '' }} Reply STOP to opt out"))


def default_for(template_type: str, channel: str, locale: str) -> tuple[str, str] | None:
    by_locale = DEFAULTS.get((template_type, channel))
    if by_locale is None:
        return None
    return by_locale.get(locale) or by_locale.get(DEFAULT_LOCALE)
