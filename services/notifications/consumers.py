"""Bus entrypoints: one thin handler for every event type notifications reacts to or relays to webhooks."""
from __future__ import annotations

from functools import partial

from aiohttp import web

from libs.bus import Bus, Envelope
from services.notifications.domain.rules import CONSUMED_EVENT_TYPES
from services.notifications.usecases import FANOUT


async def on_event(app: web.Application, envelope: Envelope, session) -> None:
    """Create this event's deliveries; the use case joins the inbox transaction. The worker sends them."""
    await app[FANOUT].handle_event(envelope)


def subscribe(app: web.Application, bus: Bus) -> None:
    # Bound to every event type the suite publishes (docs/ARCHITECTURE.md): webhooks may ask for any of them,
    # not only the ones that notify a person.
    for event_type in CONSUMED_EVENT_TYPES:
        bus.on(event_type, partial(on_event, app))
