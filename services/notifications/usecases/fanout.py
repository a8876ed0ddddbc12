"""Fan-out: one bus event (or one campaign member) becomes deliveries, in one unit of work.

The consumer runs inside the bus's inbox transaction and our unit of work joins it, so the deliveries, the
cap counters and the inbox record commit together: a redelivered event finds its id in the inbox and creates
nothing, and the unique (event id, recipient, channel) index backs that up.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from aiohttp import web

from libs.bus import Envelope
from libs.clock import rfc3339, to_ms, utcnow
from libs.ids import new_id
from libs.mongo import Mongo
from libs.outbox import Outbox
from services.notifications import metrics
from services.notifications.domain import policy, templates
from services.notifications.domain.policy import Plan, Planned, Recipient
from services.notifications.domain.rules import (
    FRANCHISEE, MEMBER, PHONE, PRIVATE_EVENT_TYPES, RULES, SECRET_CODES, SINK, STORE_MANAGERS, WEBHOOK, Rule,
    code_ref, masked,
)
from services.notifications.events import DeliveryFailed
from services.notifications.repository import (
    DailyCaps, DeliveryRepository, PreferenceRepository, RecipientDirectory, TemplateRepository, WebhookRepository,
    recipient_from,
)
from services.notifications.settings import NotificationsSettings


def delivery_key(event_id: str, recipient_id: str, channel: str) -> str:
    """What makes a delivery one: at most one per event, recipient and channel. A digest, so the key of a
    long webhook id or campaign id stays short; `_id` stays time-ordered for paging."""
    material = "\x1f".join((event_id, recipient_id, channel)).encode()
    return hashlib.blake2b(material, digest_size=16).hexdigest()


def delivery_doc(*, event_id: str, event_type: str, category: str, recipient_id: str, member_id: str | None,
                 channel: str, address: str | None, locale: str, subject: str, body: str, status: str,
                 reason: str | None, due_at_ms: int, now: datetime, **extra: Any) -> dict:
    return {"_id": new_id("dlv"), "key": delivery_key(event_id, recipient_id, channel), "event_id": event_id, "event_type": event_type, "category": category,
            "recipient_id": recipient_id, "member_id": member_id, "channel": channel, "address": address,
            "locale": locale, "subject": subject, "body": body, "status": status, "reason": reason,
            "due_at_ms": due_at_ms, "scheduled_at_ms": due_at_ms, "attempt_count": 0, "created_at": now,
            "created_ms": to_ms(now), "updated_at": now, "last_error": None, "version": 1, **extra}


def contact_of(data: dict[str, Any]) -> dict[str, Any]:
    """Contact fields an event carries, at top level or under `contact`."""
    nested = data.get("contact") if isinstance(data.get("contact"), dict) else {}
    found = {}
    for key in ("phone", "email", "locale", "wechat_openid", "name"):
        value = nested.get(key) or data.get(key)
        if isinstance(value, str) and value:
            found[key] = value
    return found


class Fanout:
    def __init__(self, mongo: Mongo, outbox: Outbox, settings: NotificationsSettings) -> None:
        self.mongo, self.outbox, self.settings = mongo, outbox, settings
        self.directory, self.deliveries = RecipientDirectory(mongo), DeliveryRepository(mongo)
        self.templates, self.webhooks = TemplateRepository(mongo), WebhookRepository(mongo)
        self.preferences = PreferenceRepository(mongo, settings.default_daily_cap)
        self.caps = DailyCaps(mongo)

    async def handle_event(self, envelope: Envelope) -> int:
        """All the deliveries of one event: to people by the rules, and to webhook subscribers."""
        return await self.mongo.transaction(lambda session: self._handle(envelope, session))

    async def _handle(self, envelope: Envelope, session) -> int:
        now = utcnow()
        if envelope.type.startswith("membership.") and envelope.type != "membership.otp.requested":
            # Membership events carry the member's current contact and consent: keep the directory fresh.
            await self._update_directory(envelope, session)
        created = 0
        rule = RULES.get(envelope.type)
        ref = code_ref(envelope.type, envelope.data)
        if rule is not None and envelope.type in SECRET_CODES and ref is None:
            metrics.count_on_commit(metrics.SUPPRESSED, rule.category, "no-code")
            rule = None  # a code message that names no code cannot be sent
        if rule is not None:
            recipients = await self._recipients(rule, envelope.data, session)
            if not recipients:
                metrics.count_on_commit(metrics.SUPPRESSED, rule.category, "no-recipient")
            for recipient in recipients:
                created += len(await self.deliveries_for(
                    rule=rule, template_type=envelope.type, event_id=envelope.id,
                    occurred_at=rfc3339(envelope.occurred_at), data=masked(envelope.type, envelope.data),
                    recipient=recipient, now=now, session=session, extra={"code_ref": ref} if ref else None))
        if envelope.type not in PRIVATE_EVENT_TYPES:
            created += await self._webhook_deliveries(envelope, now, session)
        return created

    # --- the recipient directory ---------------------------------------------------------------

    async def _update_directory(self, envelope: Envelope, session) -> None:
        data = envelope.data
        member_id = data.get("member_id")
        if not isinstance(member_id, str) or not member_id:
            return
        contact = contact_of(data)
        if envelope.type != "membership.member.registered":
            contact.pop("name", None)  # in other events `name` is e.g. the coupon's name, not the member's
        fields: dict[str, Any] = {"kind": "member", "member_id": member_id, **contact}
        if "locale" in fields:
            fields["locale"] = policy.normalize_locale(fields["locale"])
        if isinstance(data.get("marketing_consent"), bool):
            fields["marketing_consent"] = data["marketing_consent"]
        await self.directory.upsert(member_id, fields, session)
        if envelope.type == "membership.member.merged":
            merged = [data.get(k) for k in ("merged_member_id", "merged_from", "source_member_id",
                                            "duplicate_member_id")]
            merged_ids = [m for value in merged for m in (value if isinstance(value, list) else [value])
                          if isinstance(m, str) and m and m != member_id]
            for merged_id in merged_ids:
                await self.directory.upsert(merged_id, {"kind": "member", "member_id": merged_id,
                                                        "merged_into": member_id}, session)

    async def _recipients(self, rule: Rule, data: dict[str, Any], session) -> list[Recipient]:
        contact = contact_of(data)
        if isinstance(data.get("marketing_consent"), bool):
            contact["marketing_consent"] = data["marketing_consent"]
        if rule.audience == MEMBER:
            member_id = data.get("member_id")
            if isinstance(member_id, str) and member_id:
                doc = await self.directory.resolve_member(member_id, session)
                return [recipient_from(doc, doc["_id"] if doc else member_id, "member", contact)]
            if contact.get("phone"):  # a guest order: only what the event carries
                return [recipient_from(None, f"phone:{contact['phone']}", "phone", contact)]
            return []
        if rule.audience == PHONE:
            phone = contact.get("phone")
            return [recipient_from(None, f"phone:{phone}", "phone", contact)] if phone else []
        if rule.audience == STORE_MANAGERS:
            location_id = data.get("location_id")
            if not isinstance(location_id, str) or not location_id:
                return []
            return [await self._inbox(f"store:{location_id}", "store", session)]
        if rule.audience == FRANCHISEE:
            # Statements close for every party; the franchisee hears about its own and its stores' statements.
            if data.get("party_kind") not in (None, "franchisee", "store"):
                return []
            franchisee_id = data.get("franchisee_id")
            if not franchisee_id and str(data.get("party_id", "")).startswith("frn_"):
                franchisee_id = data["party_id"]
            if not isinstance(franchisee_id, str) or not franchisee_id:
                return []
            return [await self._inbox(f"franchisee:{franchisee_id}", "franchisee", session)]
        return []

    async def _inbox(self, recipient_id: str, kind: str, session) -> Recipient:
        return recipient_from(await self.directory.get(recipient_id, session), recipient_id, kind, {})

    # --- rendering and planning ----------------------------------------------------------------

    async def _render(self, template_type: str, channel: str, locale: str, context: dict[str, Any],
                      session) -> templates.Rendered:
        """Render the stored template (the member's locale, else zh-CN, else the built-in default)."""
        stored = await self.templates.for_rendering(template_type, channel, locale, session) or \
            await self.templates.for_rendering(template_type, channel, policy.DEFAULT_LOCALE, session)
        if stored is not None:
            subject, body = stored["subject"], stored["body"]
        else:
            fallback = templates.default_for(template_type, channel, locale)
            if fallback is None:
                raise templates.TemplateProblem(f"no template for {template_type} on {channel}")
            subject, body = fallback
        return templates.render(subject, body, context)

    async def deliveries_for(self, *, rule: Rule, template_type: str, event_id: str, occurred_at: str,
                             data: dict[str, Any], recipient: Recipient, now: datetime, session,
                             channels: tuple[str, ...] | None = None, not_before_ms: int | None = None,
                             extra: dict[str, Any] | None = None) -> list[dict]:
        """Plan, cap, render and insert the deliveries of one message to one recipient."""
        prefs = await self.preferences.get(recipient.member_id, session) if recipient.kind == "member" else \
            policy.Preferences(daily_cap=self.settings.default_daily_cap)
        decided: Plan = policy.plan(rule, recipient, prefs, now, channels)
        if decided.counts_toward_cap and not await self.caps.take(
                recipient.member_id, policy.cap_day(now, prefs), prefs.daily_cap, session):
            decided = decided.suppressed("daily-cap")
        if not decided.deliveries:
            metrics.count_on_commit(metrics.SUPPRESSED, rule.category, decided.reason or "none")
            return []
        extra = extra or {}
        context = templates.context_for(template_type, event_id, occurred_at, data, recipient.name,
                                        recipient.locale)
        docs = [await self._planned_doc(rule, template_type, event_id, recipient, planned, context, now, session,
                                        not_before_ms, extra)
                for planned in decided.deliveries]
        mirrored = [d for d in docs if d["status"] == "pending"]
        if self.settings.mirror_to_sink and mirrored:
            first = mirrored[0]
            docs.append(delivery_doc(event_id=event_id, event_type=template_type, category=rule.category,
                                     recipient_id=recipient.id, member_id=recipient.member_id, channel=SINK,
                                     address=f"sink:{first['channel']}:{first['address']}",
                                     locale=recipient.locale, subject=first["subject"], body=first["body"],
                                     status="pending", reason=None, due_at_ms=first["due_at_ms"], now=now, **extra))
        created = await self.deliveries.add_many(docs, session)
        for doc in created:
            metrics.count_on_commit(metrics.DELIVERIES_CREATED, doc["channel"], rule.category, doc["status"])
            if doc["status"] == "suppressed":
                metrics.count_on_commit(metrics.SUPPRESSED, rule.category, doc["reason"] or "none")
            if doc["status"] == "failed":
                await self.record_failure(doc, session)
        return created

    async def _planned_doc(self, rule: Rule, template_type: str, event_id: str, recipient: Recipient,
                           planned: Planned, context: dict[str, Any], now: datetime, session,
                           not_before_ms: int | None, extra: dict[str, Any]) -> dict:
        due_ms = max(to_ms(planned.due_at), not_before_ms or 0)
        status, reason, subject, body = planned.status, planned.reason, "", ""
        try:
            rendered = await self._render(template_type, planned.channel, recipient.locale, context, session)
            subject, body = rendered.subject, rendered.body
        except templates.TemplateProblem as exc:
            # A broken template fails this delivery for good (and says so); other channels still go out.
            status, reason = "failed", f"template-error: {exc}"[:300]
        doc = delivery_doc(event_id=event_id, event_type=template_type, category=rule.category,
                           recipient_id=recipient.id, member_id=recipient.member_id, channel=planned.channel,
                           address=planned.address, locale=recipient.locale, subject=subject, body=body,
                           status=status, reason=reason, due_at_ms=due_ms, now=now, **extra)
        if status == "failed":
            doc["last_error"] = reason
        return doc

    async def record_failure(self, delivery: dict, session) -> None:
        """Publish `notifications.delivery.failed` in the transaction that marks the delivery failed."""
        if delivery["event_type"] == "notifications.delivery.failed" and delivery["channel"] == WEBHOOK:
            return  # a failed webhook about a failure must not produce another failure event (no feedback loop)
        metrics.count_on_commit(metrics.DELIVERIES_FAILED, delivery["channel"], delivery["category"])
        await self.outbox.record(session, DeliveryFailed(
            delivery_id=delivery["_id"], event_id=delivery["event_id"], notified_event_type=delivery["event_type"],
            recipient_id=delivery["recipient_id"], member_id=delivery.get("member_id"), channel=delivery["channel"],
            category=delivery["category"], attempts=delivery["attempt_count"],
            error=(delivery.get("last_error") or delivery.get("reason") or "unknown")[:500],
            failed_at=utcnow()), subject=delivery["_id"])

    async def _webhook_deliveries(self, envelope: Envelope, now: datetime, session) -> int:
        subscriptions = await self.webhooks.active_for(envelope.type, session)
        if not subscriptions:
            return 0
        payload = envelope.model_dump_json()
        docs = [delivery_doc(event_id=envelope.id, event_type=envelope.type, category="webhook",
                             recipient_id=sub["_id"], member_id=None, channel=WEBHOOK, address=sub["url"],
                             locale=policy.DEFAULT_LOCALE, subject=envelope.type, body="", status="pending",
                             reason=None, due_at_ms=to_ms(now), now=now, payload=payload, webhook_id=sub["_id"])
                for sub in subscriptions]
        created = await self.deliveries.add_many(docs, session)
        for _ in created:
            metrics.count_on_commit(metrics.DELIVERIES_CREATED, WEBHOOK, "webhook", "pending")
        return len(created)


FANOUT = web.AppKey("notifications_fanout", Fanout)
