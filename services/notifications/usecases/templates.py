"""Message templates: the built-in defaults seeded at start-up, admin edits (checked before they are stored)
and previews."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from libs.clock import rfc3339, utcnow
from libs.mongo import Mongo, refuse_duplicates
from libs.refusal import NOT_FOUND
from services.notifications.domain import templates
from services.notifications.domain.errors import NotificationError, missing
from services.notifications.domain.rules import CAMPAIGN_PREFIX, LOCALES, PERSON_CHANNELS, SINK, is_template_type, \
    template_keys
from services.notifications.repository import TemplateRepository

TEMPLATE_CHANNELS = (*PERSON_CHANNELS, SINK)


def template_key(template_type: str, channel: str, locale: str) -> tuple[str, str, str]:
    """The key of an editable template, or a 404 refusal saying which part is unknown."""
    if not is_template_type(template_type):
        raise NotificationError("unknown-template-type", f"{template_type!r} is neither a notified event type "
                                f"nor '{CAMPAIGN_PREFIX}<name>'", kind=NOT_FOUND)
    if channel not in TEMPLATE_CHANNELS:
        raise NotificationError("unknown-channel", f"channel must be one of {', '.join(TEMPLATE_CHANNELS)}",
                                kind=NOT_FOUND)
    if locale not in LOCALES:
        raise NotificationError("unknown-locale", f"locale must be one of {', '.join(LOCALES)}", kind=NOT_FOUND)
    return template_type, channel, locale


def trial_render(subject: str, body: str, data: dict[str, Any] | None = None,
                 locale: str = "zh-CN") -> templates.Rendered:
    """Compile and render in the sandbox; a template that cannot work is refused (422), never stored."""
    templates.check(subject, body)
    return templates.render(subject, body, templates.context_for("preview", "evt_preview", rfc3339(utcnow()),
                                                                 data or {}, "", locale))


class Templates:
    def __init__(self, mongo: Mongo) -> None:
        self.mongo = mongo
        self.templates = TemplateRepository(mongo)

    async def seed_defaults(self) -> int:
        """Store the default templates that are not stored yet (edited ones are kept)."""

        async def unit(session):
            seeded = 0
            for template_type, channel in template_keys():
                for locale in LOCALES:
                    subject, body = templates.default_for(template_type, channel, locale)
                    seeded += await self.templates.seed(template_type, channel, locale, subject, body, session)
            return seeded

        return await self.mongo.transaction(unit)

    async def list(self, template_type: str | None) -> list[dict]:
        return await self.mongo.read_committed(lambda: self.templates.list(template_type))

    async def get(self, template_type: str, channel: str, locale: str) -> dict:
        key = template_key(template_type, channel, locale)
        doc = await self.mongo.read_committed(lambda: self.templates.get(*key))
        if doc is None:
            raise missing("template")
        return doc

    async def put(self, template_type: str, channel: str, locale: str, subject: str, body: str, by: str) -> dict:
        key = template_key(template_type, channel, locale)
        trial_render(subject, body)
        # Two first edits of a new template at the same moment: the unique key keeps one, the other is told.
        with refuse_duplicates("template-edited-concurrently", "another edit of this template was saved at the "
                                                               "same moment; read it and try again"):
            return await self.mongo.transaction(lambda s: self.templates.put(*key, subject, body, by, s))

    async def exists_for_campaign(self, template_type: str, channel: str) -> bool:
        """A campaign needs a stored template or a built-in default on each of its channels."""
        stored = await self.mongo.read_committed(lambda: self.templates.get(template_type, channel, "zh-CN"))
        return stored is not None or templates.default_for(template_type, channel, "zh-CN") is not None


TEMPLATES = web.AppKey("notifications_templates", Templates)
