"""Periodic jobs: the delivery worker (sends due deliveries, retries, fails) and the campaign runner."""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from aiohttp import web

from libs.clients import ServiceClient, UpstreamError
from libs.http import SETTINGS
from libs.logging import get_logger
from libs.problems import Problem
from libs.service import MONGO, OUTBOX
from services.notifications import metrics
from services.notifications.channels.base import Channel, OutboundMessage, SendReport
from services.notifications.domain import policy
from services.notifications.domain.rules import CAMPAIGN_RULE, WEBHOOK
from services.notifications.fanout import Context, deliveries_for, record_failure
from services.notifications.repository import (
    CampaignRepository, DeliveryRepository, PreferenceRepository, RecipientDirectory, WebhookRepository, new_id, now_ms, recipient_from,
)

log = get_logger("notifications.jobs")
CHANNELS = web.AppKey("channels", dict)
MEMBERSHIP = web.AppKey("membership_client", ServiceClient)


def context_of(app: web.Application) -> Context:
    return Context(app[MONGO], app[OUTBOX], app[SETTINGS])


def retry_policy(settings) -> policy.RetryPolicy:
    return policy.RetryPolicy(settings.max_attempts, settings.retry_base_delay_ms, settings.retry_max_delay_ms)


# --- delivery worker --------------------------------------------------------------------------------

async def deliver_due(app: web.Application) -> int:
    """Send every delivery that is due now (bounded concurrency); returns how many were sent or tried."""
    settings = app[SETTINGS]
    due = await DeliveryRepository(app[MONGO]).due(now_ms(), settings.delivery_batch)
    metrics.DUE_BACKLOG.set(len(due))
    if not due:
        return 0
    # One transaction claims the whole batch (transactions are the scarce resource on a serialized server).
    claimed = await claim(app, [doc["_id"] for doc in due])
    gate = asyncio.Semaphore(settings.delivery_concurrency)

    async def one(delivery: dict) -> None:
        async with gate:
            try:
                await send_claimed(app, delivery)
            except Exception:  # one broken delivery must not stop the others
                log.exception("delivery.worker_error", delivery_id=delivery["_id"])

    await asyncio.gather(*(one(doc) for doc in claimed))
    return len(claimed)


async def claim(app: web.Application, delivery_ids: list[str]) -> list[dict]:
    """Take the deliveries that are still due for this worker; each claim is a lease.

    A claimed delivery comes due again when its lease ends, so a crashed worker's work is picked up.
    Another worker that claimed one first makes the version check fail: the unit is retried and skips it.
    """
    mongo, settings = app[MONGO], app[SETTINGS]
    repo = DeliveryRepository(mongo)
    lease_ms = int(settings.delivery_lease_s * 1000)

    async def unit(session):
        taken = []
        for delivery_id in delivery_ids:
            doc = await repo.get(delivery_id, session)
            if doc is None or doc["status"] not in ("pending", "sending") or doc["due_at_ms"] > now_ms():
                continue
            withdrawn = await _marketing_withdrawn(app, doc, session)
            if withdrawn:
                # Deferred marketing may wait hours (quiet hours, pacing): consent or choice may have changed.
                await repo.save({**doc, "status": "suppressed", "reason": withdrawn,
                                 "updated_at": datetime.now(UTC)}, session)
                metrics.count_on_commit(metrics.SUPPRESSED, doc["category"], withdrawn)
                continue
            taken.append(await repo.save({**doc, "status": "sending", "due_at_ms": now_ms() + lease_ms,
                                          "attempt_count": doc["attempt_count"] + 1}, session))
        return taken

    return await mongo.transaction(unit)


async def deliver_one(app: web.Application, delivery_id: str) -> str | None:
    """Claim one delivery and send it once. Returns the new status (None if it was not due or not ours)."""
    claimed = await claim(app, [delivery_id])
    return await send_claimed(app, claimed[0]) if claimed else None


async def send_claimed(app: web.Application, claimed: dict) -> str:
    """Send a claimed delivery once, then record the attempt and the outcome in one transaction."""
    mongo, settings = app[MONGO], app[SETTINGS]
    repo = DeliveryRepository(mongo)
    delivery_id = claimed["_id"]
    attempt = claimed["attempt_count"]
    channel: Channel | None = app[CHANNELS].get(claimed["channel"])
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    if channel is None:
        report = SendReport.permanent_failure(f"channel {claimed['channel']} is not configured")
    else:
        message = await _message_for(app, claimed, attempt)
        try:
            report = await asyncio.wait_for(channel.send(message), timeout=settings.send_timeout_s)
        except asyncio.TimeoutError:
            report = SendReport.transient(f"{claimed['channel']} did not answer in {settings.send_timeout_s}s")
        except Exception as exc:  # noqa: BLE001 - an adapter bug is logged and retried like any transient error
            log.exception("delivery.adapter_error", channel=claimed["channel"])
            report = SendReport.transient(f"adapter error: {type(exc).__name__}: {exc}")
    elapsed = time.perf_counter() - started
    outcome_label = "sent" if report.ok else ("permanent_error" if report.permanent else "transient_error")
    metrics.ATTEMPTS.labels(claimed["channel"], outcome_label).inc()
    metrics.SEND_LATENCY.labels(claimed["channel"]).observe(elapsed)
    # A manual retry gives a failed delivery a fresh budget: count attempts from where it was retried.
    attempt_in_budget = attempt - claimed.get("budget_start", 0)
    result = policy.after_attempt(attempt_in_budget, policy.Outcome(report.ok, report.permanent, report.error),
                                  retry_policy(settings), now_ms())
    finished_at = datetime.now(UTC)

    async def finish(session):
        await repo.add_attempt({
            "_id": new_id("att"), "delivery_id": delivery_id, "number": attempt, "channel": claimed["channel"],
            "outcome": outcome_label, "error": report.error, "status_code": report.status_code,
            "provider_id": report.provider_id, "started_at": started_at, "finished_at": finished_at,
            "duration_ms": round(elapsed * 1000, 2)}, session)
        current = await repo.get(delivery_id, session)
        if current is None or current["version"] != claimed["version"]:
            return None  # our lease ran out and another worker took over: it owns the outcome now
        updated = {**current, "status": result.status, "last_error": report.error, "updated_at": finished_at,
                   "due_at_ms": result.due_at_ms if result.due_at_ms is not None else current["due_at_ms"]}
        if result.status == "sent":
            updated["sent_at"] = finished_at
        if result.status == "failed":
            updated["failed_at"] = finished_at
            updated["reason"] = "permanent-error" if report.permanent else "retries-exhausted"
        saved = await repo.save(updated, session)
        if result.failed_for_good:
            await record_failure(context_of(app), saved, session)
        return saved

    saved = await mongo.transaction(finish)
    if saved is not None and result.status == "sent":
        metrics.DELIVERY_LATENCY.labels(claimed["channel"]).observe(
            max(0.0, (now_ms() - claimed["created_ms"]) / 1000))
    log.info("delivery.attempted", delivery_id=delivery_id, channel=claimed["channel"], attempt=attempt,
             outcome=outcome_label, status=result.status, error=report.error)
    return result.status


async def _marketing_withdrawn(app: web.Application, delivery: dict, session) -> str | None:
    if delivery["category"] != "marketing" or not delivery.get("member_id"):
        return None
    entry = await RecipientDirectory(app[MONGO]).resolve_member(delivery["member_id"], session)
    if entry is not None and entry.get("marketing_consent") is False:
        return "consent-withdrawn"
    prefs = await PreferenceRepository(app[MONGO], app[SETTINGS].default_daily_cap).get(delivery["member_id"], session)
    if not prefs.category_on("marketing") or not prefs.channel_on(delivery["channel"]):
        return "marketing-off"
    return None


async def _message_for(app: web.Application, delivery: dict, attempt: int) -> OutboundMessage:
    secret = None
    if delivery["channel"] == WEBHOOK:
        subscription = await WebhookRepository(app[MONGO]).get(delivery.get("webhook_id", ""))
        # A removed or paused subscription gets nothing more (the adapter reports a permanent failure).
        secret = subscription["secret"] if subscription and subscription.get("active") else None
    return OutboundMessage(delivery_id=delivery["_id"], event_id=delivery["event_id"],
                           event_type=delivery["event_type"], channel=delivery["channel"],
                           address=delivery.get("address") or "", subject=delivery.get("subject", ""),
                           body=delivery.get("body", ""), locale=delivery.get("locale", "zh-CN"), attempt=attempt,
                           payload=(delivery.get("payload") or "").encode(), secret=secret)


# --- campaign runner ---------------------------------------------------------------------------------

async def run_campaigns(app: web.Application) -> None:
    for campaign in await CampaignRepository(app[MONGO]).running():
        try:
            while await advance_campaign(app, campaign["_id"]):
                pass
        except Problem as exc:  # membership unavailable: try again on the next run
            log.warning("campaign.membership_unavailable", campaign_id=campaign["_id"], detail=exc.detail)


async def advance_campaign(app: web.Application, campaign_id: str) -> bool:
    """Fetch one page of the tag's members and queue their deliveries; True while pages remain."""
    mongo, settings = app[MONGO], app[SETTINGS]
    repo = CampaignRepository(mongo)
    campaign = await mongo.read_committed(lambda: repo.get(campaign_id))
    if campaign is None or campaign["status"] not in ("queued", "running"):
        return False
    params = {"tag": campaign["tag"], "limit": str(settings.campaign_page_size)}
    if campaign.get("cursor"):
        params["cursor"] = campaign["cursor"]
    try:
        page = await app[MEMBERSHIP].get("/members/internal/members", params=params)
    except UpstreamError as exc:
        async def fail(session):
            current = await repo.get(campaign_id, session)
            await repo.save({**current, "status": "failed", "last_error": str(exc)[:500],
                             "finished_at": datetime.now(UTC)}, session)
        await mongo.transaction(fail)
        log.error("campaign.failed", campaign_id=campaign_id, error=str(exc))
        return False
    items = page.get("items", []) if isinstance(page, dict) else []
    next_cursor = page.get("next_cursor") if isinstance(page, dict) else None
    ctx = context_of(app)
    now = datetime.now(UTC)

    async def queue_page(session):
        current = await repo.get(campaign_id, session)
        if current is None or current["version"] != campaign["version"]:
            return False  # another replica advanced it meanwhile
        seen, queued, suppressed = current["members_seen"], current["queued"], current["suppressed"]
        next_free_ms = current.get("next_slot_ms", 0)
        directory = RecipientDirectory(mongo)
        for item in items:
            member_id = item.get("id") or item.get("member_id")
            if not isinstance(member_id, str):
                continue
            contact = {k: item.get(k) for k in ("phone", "email", "locale", "name", "wechat_openid")
                       if isinstance(item.get(k), str)}
            if "locale" in contact:
                contact["locale"] = policy.normalize_locale(contact["locale"])
            consent = bool(item.get("marketing_consent", False))
            entry = await directory.upsert(member_id, {"kind": "member", "member_id": member_id,
                                                       "marketing_consent": consent, **contact}, session)
            recipient = recipient_from(entry, member_id, "member", {**contact, "marketing_consent": consent})
            slot, following = policy.campaign_slot(next_free_ms, now_ms(), settings.campaign_rate_per_s)
            created = await deliveries_for(
                ctx, rule=CAMPAIGN_RULE, template_type=current["template"], event_id=campaign_id,
                occurred_at=current["created_at"].isoformat(), data=current.get("data", {}), recipient=recipient,
                now=now, session=session, channels=tuple(current["channels"]),
                not_before_ms=slot, extra={"campaign_id": campaign_id})
            seen += 1
            if any(d["status"] == "pending" for d in created):
                next_free_ms = following
                queued += 1
                metrics.count_on_commit(metrics.CAMPAIGN_MEMBERS, "queued")
            else:
                suppressed += 1
                metrics.count_on_commit(metrics.CAMPAIGN_MEMBERS, "suppressed")
        done = not next_cursor or not items
        await repo.save({**current, "status": "completed" if done else "running", "cursor": next_cursor,
                         "members_seen": seen, "queued": queued, "suppressed": suppressed,
                         "next_slot_ms": next_free_ms,
                         **({"finished_at": datetime.now(UTC)} if done else {})}, session)
        return not done

    return await mongo.transaction(queue_page)
