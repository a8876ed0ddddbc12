"""Stored documents as the API shows them (the shapes of schemas.py): ids, RFC 3339 times, redacted secrets."""
from __future__ import annotations

from libs.clock import rfc3339
from services.notifications.domain.policy import DEFAULT_TIMEZONE
from services.notifications.domain.rules import MEMBER_CATEGORIES, PERSON_CHANNELS

# Messages whose text is a secret for one person: the log shows that they went out, not what they said.
SECRET_BODIES = frozenset({"membership.otp.requested"})
SIGNATURE = {"header": "X-O2O-Signature", "scheme": "t=<unix>,v1=<hex hmac-sha256(secret, t.body)>"}
PREFERENCE_NOTES = {"transactional": "always sent", "marketing": "sent only with marketing consent",
                    "quiet_hours": "marketing is deferred to the end of quiet hours",
                    "daily_cap": "service and marketing messages per local day"}


def _shown_body(doc: dict) -> str | None:
    if doc["channel"] == "webhook":
        return None  # the envelope itself; the receiver has it
    if doc["event_type"] in SECRET_BODIES:
        return "(redacted: contains a one-time password)"
    return doc.get("body")


def attempt_view(attempt: dict) -> dict:
    return {"number": attempt["number"], "outcome": attempt["outcome"], "error": attempt.get("error"),
            "status_code": attempt.get("status_code"), "started_at": rfc3339(attempt.get("started_at")),
            "finished_at": rfc3339(attempt.get("finished_at")), "duration_ms": attempt.get("duration_ms")}


def delivery_view(doc: dict, attempts: list[dict]) -> dict:
    waiting = doc["status"] in ("pending", "sending")
    return {
        "id": doc["_id"], "event_id": doc["event_id"], "type": doc["event_type"], "category": doc["category"],
        "recipient": doc["recipient_id"], "member_id": doc.get("member_id"), "channel": doc["channel"],
        "address": doc.get("address"), "locale": doc.get("locale"), "subject": doc.get("subject"),
        "body": _shown_body(doc), "status": doc["status"], "reason": doc.get("reason"),
        "attempt_count": doc.get("attempt_count", 0), "scheduled_at": rfc3339(doc.get("scheduled_at_ms")),
        "next_attempt_at": rfc3339(doc["due_at_ms"]) if waiting else None,
        "last_error": doc.get("last_error"), "created_at": rfc3339(doc.get("created_at")),
        "sent_at": rfc3339(doc.get("sent_at")), "failed_at": rfc3339(doc.get("failed_at")),
        "campaign_id": doc.get("campaign_id"), "attempts": [attempt_view(a) for a in attempts],
    }


def _quiet_hours(stored: dict | None) -> dict | None:
    # Quiet hours saved without a time zone (before it was always stored) are in the default one.
    return {"timezone": DEFAULT_TIMEZONE, **stored} if stored else None


def preferences_view(doc: dict) -> dict:
    return {"member_id": doc["_id"], "channels": {c: doc["channels"].get(c, True) for c in PERSON_CHANNELS},
            "categories": {"transactional": True, **{c: doc["categories"].get(c, True) for c in MEMBER_CATEGORIES}},
            "quiet_hours": _quiet_hours(doc.get("quiet_hours")), "daily_cap": doc["daily_cap"], "notes": PREFERENCE_NOTES}


def template_view(doc: dict) -> dict:
    return {"type": doc["type"], "channel": doc["channel"], "locale": doc["locale"], "subject": doc["subject"],
            "body": doc["body"], "is_default": doc.get("is_default", False), "version": doc.get("version"),
            "updated_at": rfc3339(doc.get("updated_at")), "updated_by": doc.get("updated_by")}


def webhook_view(doc: dict, with_secret: bool = False) -> dict:
    out = {"id": doc["_id"], "url": doc["url"], "event_types": doc["event_types"], "active": doc["active"],
           "description": doc.get("description", ""), "created_at": rfc3339(doc.get("created_at")),
           "signature": SIGNATURE}
    if with_secret:
        out["secret"] = doc["secret"]  # the secret is shown once, at creation
    return out


def campaign_view(doc: dict) -> dict:
    return {"id": doc["_id"], "name": doc["name"], "tag": doc["tag"], "template": doc["template"],
            "channels": doc["channels"], "status": doc["status"], "members_seen": doc["members_seen"],
            "queued": doc["queued"], "suppressed": doc["suppressed"], "rate_per_s": doc["rate_per_s"],
            "created_at": rfc3339(doc.get("created_at")), "finished_at": rfc3339(doc.get("finished_at")),
            "last_error": doc.get("last_error")}


def recipient_view(doc: dict) -> dict:
    return {"id": doc["_id"], **{k: doc.get(k) for k in ("kind", "name", "email", "phone", "locale")}}


def outbound_view(doc: dict) -> dict:
    return {"delivery_id": doc["delivery_id"], "channel": doc["channel"], "address": doc["address"],
            "subject": doc["subject"], "body": doc["body"], "locale": doc["locale"], "event_id": doc["event_id"],
            "event_type": doc["event_type"], "sandbox": doc.get("sandbox", True),
            "recorded_at": rfc3339(doc.get("recorded_at"))}
