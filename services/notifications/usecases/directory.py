"""The recipient directory as people set it: contacts of staff and franchisee inboxes, and the demo's
contacts (members' contacts otherwise come from membership's events, through the fan-out)."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from libs.mongo import Mongo
from libs.refusal import NOT_FOUND
from services.notifications.domain import policy
from services.notifications.domain.errors import NotificationError
from services.notifications.repository import RecipientDirectory

INBOX_KINDS = ("store", "franchisee")


def inbox_kind(recipient_id: str) -> str:
    """The kind of an inbox whose contact is set here, or a 404 refusal (members' come from membership)."""
    kind, separator, _ = recipient_id.partition(":")
    if kind not in INBOX_KINDS or not separator:
        raise NotificationError("unknown-recipient", "contacts are set here for 'store:<location_id>' and "
                                "'franchisee:<id>' only; member contacts come from membership", kind=NOT_FOUND)
    return kind


class Directory:
    def __init__(self, mongo: Mongo) -> None:
        self.mongo, self.directory = mongo, RecipientDirectory(mongo)

    async def put_inbox_contact(self, recipient_id: str, fields: dict[str, Any]) -> dict:
        """Set the contact of a staff or franchisee inbox ('store:<location_id>', 'franchisee:<id>')."""
        fields = {"kind": inbox_kind(recipient_id), **fields}
        if "locale" in fields:
            fields["locale"] = policy.normalize_locale(fields["locale"])
        return await self.mongo.transaction(lambda s: self.directory.upsert(recipient_id, fields, s))

    async def load(self, entries: list[tuple[str, dict[str, Any]]]) -> int:
        """Merge many contacts at once, in one unit of work (the demo loader); returns how many."""

        async def unit(session) -> int:
            for recipient_id, fields in entries:
                await self.directory.upsert(recipient_id, fields, session)
            return len(entries)

        return await self.mongo.transaction(unit)


DIRECTORY = web.AppKey("notifications_directory", Directory)
