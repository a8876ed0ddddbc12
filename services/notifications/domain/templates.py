"""Message templates: the defaults seeded at start-up and sandboxed rendering. Pure (no I/O).

Templates are Jinja2 rendered in `SandboxedEnvironment`, so an admin-edited template cannot reach Python
internals (attribute access to `__class__`, `mro`, ... raises SecurityError). The context is the event's
`data` (also spread at top level), `event` (id, type, occurred_at) and `recipient` (name, locale,
time_zone). Filters: `yuan` (fen as ¥12.34) and `local_time` (an instant in the recipient's zone and words).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from pathlib import Path
from typing import Any

from jinja2 import TemplateError, Undefined, pass_context
from jinja2.sandbox import SandboxedEnvironment

from libs.refusal import INVALID, Refusal
from services.notifications.domain.rules import DEFAULT_LOCALE

MAX_TEMPLATE_CHARS = 4000
MAX_RENDERED_CHARS = 8000


class TemplateProblem(Refusal):
    """A template that does not compile or does not render (never stored; a delivery that needs it fails)."""

    default_kind = INVALID

    def __init__(self, detail: str) -> None:
        super().__init__("invalid-template", detail)


def yuan(fen: Any) -> str:
    """Integer fen as a price for people: 12345 -> ¥123.45."""
    try:
        value = int(fen)
    except (TypeError, ValueError):
        return str(fen)
    sign = "-" if value < 0 else ""
    value = abs(value)
    return f"{sign}¥{value // 100}.{value % 100:02d}"


DEFAULT_TIME_ZONE = "Asia/Shanghai"


@pass_context
def local_time(context, instant: Any) -> str:
    """An RFC 3339 instant as people read it: in the recipient's time zone and words (zh-CN or en)."""
    try:
        moment = datetime.fromisoformat(str(instant).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        recipient = context.get("recipient") or {}
        local = moment.astimezone(ZoneInfo(recipient.get("time_zone") or DEFAULT_TIME_ZONE))
    except (ValueError, TypeError, ZoneInfoNotFoundError):
        return str(instant)
    if str(recipient.get("locale", "")).startswith("zh"):
        return f"{local.month}月{local.day}日 {local:%H:%M}"
    return f"{local.day} {local:%b} {local:%H:%M}"


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(autoescape=False, undefined=Undefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["yuan"] = yuan
    env.filters["local_time"] = local_time
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
                recipient_name: str | None, locale: str, time_zone: str = DEFAULT_TIME_ZONE) -> dict[str, Any]:
    # Event fields first, then the names the templates rely on, so an event cannot shadow them.
    return {**data, "data": data, "event": {"id": event_id, "type": event_type, "occurred_at": occurred_at},
            "recipient": {"name": recipient_name or "", "locale": locale, "time_zone": time_zone}}


# (template type, channel) -> locale -> (subject, body). Short texts for sms/push/wechat, fuller for email.
# The texts are data, kept beside this module; the file ships with the code and is read once at import.
DEFAULTS_FILE = Path(__file__).with_name("default_templates.json")


def _load_defaults(path: Path = DEFAULTS_FILE) -> dict[tuple[str, str], dict[str, tuple[str, str]]]:
    defaults: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    for entry in json.loads(path.read_text(encoding="utf-8")):
        texts = {locale: tuple(entry[locale]) for locale in ("zh-CN", "en")}
        for channel in entry["channels"]:
            defaults[(entry["type"], channel)] = texts
    return defaults


DEFAULTS = _load_defaults()


def default_for(template_type: str, channel: str, locale: str) -> tuple[str, str] | None:
    by_locale = DEFAULTS.get((template_type, channel))
    if by_locale is None:
        return None
    return by_locale.get(locale) or by_locale.get(DEFAULT_LOCALE)
