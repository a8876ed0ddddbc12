"""The delivery worker: claims due deliveries (a lease), sends each once, retries with backoff, gives up."""
from __future__ import annotations

import asyncio
import time

from aiohttp import web

from libs.clock import now_ms, utcnow
from libs.ids import new_id
from libs.logging import get_logger
from libs.mongo import Mongo
from services.notifications import metrics
from services.notifications.channels.base import Channel, OutboundMessage, SendReport
from services.notifications.domain import policy
from services.notifications.domain.rules import CODE_MASK, WEBHOOK
from services.notifications.repository import (
    DeliveryRepository, PreferenceRepository, RecipientDirectory, WebhookRepository,
)
from services.notifications.settings import NotificationsSettings
from services.notifications.usecases.codes import CodeUnavailable, Codes
from services.notifications.usecases.fanout import Fanout

log = get_logger("notifications.worker")


class DeliveryWorker:
    def __init__(self, mongo: Mongo, settings: NotificationsSettings, fanout: Fanout,
                 channels: dict[str, Channel], codes: Codes) -> None:
        self.mongo, self.settings, self.fanout, self.channels = mongo, settings, fanout, channels
        self.codes = codes
        self.deliveries, self.webhooks = DeliveryRepository(mongo), WebhookRepository(mongo)
        self.directory = RecipientDirectory(mongo)
        self.preferences = PreferenceRepository(mongo, settings.default_daily_cap)
        self.retry_policy = policy.RetryPolicy(settings.max_attempts, settings.retry_base_delay_ms,
                                               settings.retry_max_delay_ms)

    async def deliver_due(self) -> int:
        """Send every delivery that is due now (bounded concurrency); returns how many were sent or tried."""
        due = await self.deliveries.due(now_ms(), self.settings.delivery_batch)
        metrics.DUE_BACKLOG.set(len(due))
        if not due:
            return 0
        # One transaction claims the whole batch (transactions are the scarce resource on a serialized server).
        claimed = await self.claim([doc["_id"] for doc in due])
        gate = asyncio.Semaphore(self.settings.delivery_concurrency)

        async def one(delivery: dict) -> None:
            async with gate:
                try:
                    await self.send_claimed(delivery)
                except Exception:  # one broken delivery must not stop the others
                    log.exception("delivery.worker_error", delivery_id=delivery["_id"])

        await asyncio.gather(*(one(doc) for doc in claimed))
        return len(claimed)

    async def claim(self, delivery_ids: list[str]) -> list[dict]:
        """Take the deliveries that are still due for this worker; each claim is a lease.

        A claimed delivery comes due again when its lease ends, so a crashed worker's work is picked up.
        Another worker that claimed one first makes the version check fail: the unit is retried and skips it.
        """
        lease_ms = int(self.settings.delivery_lease_s * 1000)

        async def unit(session):
            taken = []
            for delivery_id in delivery_ids:
                doc = await self.deliveries.get(delivery_id, session)
                if doc is None or doc["status"] not in ("pending", "sending") or doc["due_at_ms"] > now_ms():
                    continue
                withdrawn = await self._marketing_withdrawn(doc, session)
                if withdrawn:
                    # Deferred marketing may wait hours (quiet hours, pacing): consent or choice may have changed.
                    await self.deliveries.save({**doc, "status": "suppressed", "reason": withdrawn,
                                                "updated_at": utcnow()}, session)
                    metrics.count_on_commit(metrics.SUPPRESSED, doc["category"], withdrawn)
                    continue
                taken.append(await self.deliveries.save({**doc, "status": "sending", "due_at_ms": now_ms() + lease_ms,
                                                         "attempt_count": doc["attempt_count"] + 1}, session))
            return taken

        return await self.mongo.transaction(unit)

    async def deliver_one(self, delivery_id: str) -> str | None:
        """Claim one delivery and send it once. Returns the new status (None if it was not due or not ours)."""
        claimed = await self.claim([delivery_id])
        return await self.send_claimed(claimed[0]) if claimed else None

    async def send_claimed(self, claimed: dict) -> str:
        """Send a claimed delivery once, then record the attempt and the outcome in one transaction."""
        started_at = utcnow()
        started = time.perf_counter()
        report, sent_body = await self._send(claimed)
        elapsed = time.perf_counter() - started
        outcome = "sent" if report.ok else ("permanent_error" if report.permanent else "transient_error")
        metrics.ATTEMPTS.labels(claimed["channel"], outcome).inc()
        metrics.SEND_LATENCY.labels(claimed["channel"]).observe(elapsed)
        # A manual retry gives a failed delivery a fresh budget: count attempts from where it was retried.
        attempt_in_budget = claimed["attempt_count"] - claimed.get("budget_start", 0)
        result = policy.after_attempt(attempt_in_budget, policy.Outcome(report.ok, report.permanent, report.error),
                                      self.retry_policy, now_ms())
        attempt = {"_id": new_id("att"), "delivery_id": claimed["_id"], "number": claimed["attempt_count"],
                   "channel": claimed["channel"], "outcome": outcome, "error": report.error,
                   "status_code": report.status_code, "provider_id": report.provider_id, "started_at": started_at,
                   "finished_at": utcnow(), "duration_ms": round(elapsed * 1000, 2)}
        saved = await self.mongo.transaction(
            lambda session: self._finish(claimed, attempt, report, result, session, sent_body))
        if saved is not None and result.status == "sent":
            metrics.DELIVERY_LATENCY.labels(claimed["channel"]).observe(
                max(0.0, (now_ms() - claimed["created_ms"]) / 1000))
        log.info("delivery.attempted", delivery_id=claimed["_id"], channel=claimed["channel"],
                 attempt=claimed["attempt_count"], outcome=outcome, status=result.status, error=report.error)
        return result.status

    async def _send(self, claimed: dict) -> tuple[SendReport, str | None]:
        """Send once; also the text that went out, when it differs from the stored one (a fetched code)."""
        channel = self.channels.get(claimed["channel"])
        if channel is None:
            return SendReport.permanent_failure(f"channel {claimed['channel']} is not configured"), None
        try:
            message = await self._message_for(claimed)
        except CodeUnavailable as exc:
            report = SendReport.permanent_failure if exc.permanent else SendReport.transient
            return report(str(exc)), None
        sent_body = message.body if claimed.get("code_ref") else None
        try:
            return await asyncio.wait_for(channel.send(message), timeout=self.settings.send_timeout_s), sent_body
        except asyncio.TimeoutError:
            return SendReport.transient(f"{claimed['channel']} did not answer in {self.settings.send_timeout_s}s"), None
        except Exception as exc:  # noqa: BLE001 - an adapter bug is logged and retried like any transient error
            log.exception("delivery.adapter_error", channel=claimed["channel"])
            return SendReport.transient(f"adapter error: {type(exc).__name__}: {exc}"), None

    async def _finish(self, claimed: dict, attempt: dict, report: SendReport, result: policy.AttemptResult,
                      session, sent_body: str | None = None) -> dict | None:
        await self.deliveries.add_attempt(attempt, session)
        current = await self.deliveries.get(claimed["_id"], session)
        if current is None or current["version"] != claimed["version"]:
            return None  # our lease ran out and another worker took over: it owns the outcome now
        finished_at = attempt["finished_at"]
        updated = {**current, "status": result.status, "last_error": report.error, "updated_at": finished_at,
                   "due_at_ms": result.due_at_ms if result.due_at_ms is not None else current["due_at_ms"]}
        if result.status == "sent":
            updated["sent_at"] = finished_at
            if sent_body is not None and self.settings.dev_mode:
                updated["body"] = sent_body  # dev mode shows the code that went out (like the OTP's dev_code)
        if result.status == "failed":
            updated["failed_at"] = finished_at
            updated["reason"] = "permanent-error" if report.permanent else "retries-exhausted"
        saved = await self.deliveries.save(updated, session)
        if result.failed_for_good:
            await self.fanout.record_failure(saved, session)
        return saved

    async def _marketing_withdrawn(self, delivery: dict, session) -> str | None:
        if delivery["category"] != "marketing" or not delivery.get("member_id"):
            return None
        entry = await self.directory.resolve_member(delivery["member_id"], session)
        if entry is not None and entry.get("marketing_consent") is False:
            return "consent-withdrawn"
        prefs = await self.preferences.get(delivery["member_id"], session)
        if not prefs.category_on("marketing") or not prefs.channel_on(delivery["channel"]):
            return "marketing-off"
        return None

    async def _message_for(self, delivery: dict) -> OutboundMessage:
        secret = None
        if delivery["channel"] == WEBHOOK:
            subscription = await self.mongo.read_committed(lambda: self.webhooks.get(delivery.get("webhook_id", "")))
            # A removed or paused subscription gets nothing more (the adapter reports a permanent failure).
            secret = subscription["secret"] if subscription and subscription.get("active") else None
        subject, body, kept_body = delivery.get("subject", ""), delivery.get("body", ""), None
        if delivery.get("code_ref"):
            code = await self.codes.fetch(delivery["code_ref"])
            kept_body = None if self.settings.dev_mode else body
            subject, body = subject.replace(CODE_MASK, code), body.replace(CODE_MASK, code)
        return OutboundMessage(delivery_id=delivery["_id"], event_id=delivery["event_id"],
                               event_type=delivery["event_type"], channel=delivery["channel"],
                               address=delivery.get("address") or "", subject=subject, body=body,
                               locale=delivery.get("locale", "zh-CN"), attempt=delivery["attempt_count"],
                               payload=(delivery.get("payload") or "").encode(), secret=secret, kept_body=kept_body)


DELIVERY_WORKER = web.AppKey("notifications_delivery_worker", DeliveryWorker)
