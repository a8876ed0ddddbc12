from aiohttp import ClientSession, ClientTimeout, web

from libs.clients import ServiceClient, ServiceTokenProvider
from libs.logging import get_logger
from libs.mongo import Mongo
from libs.openapi import add_openapi_route
from libs.service import MONGO, OUTBOX, add_periodic_job, create_service_app
from services.notifications.channels.base import Channel
from services.notifications.channels.email import EmailChannel
from services.notifications.channels.recording import RecordingChannel
from services.notifications.channels.webhook import WebhookChannel, public_only_session
from services.notifications.consumers import subscribe
from services.notifications.demo import load_demo
from services.notifications.domain.rules import EMAIL, PUSH, SINK, SMS, WEBHOOK, WECHAT
from services.notifications.handlers import routes
from services.notifications.jobs import deliver_due, run_campaigns
from services.notifications.repository import INDEXES
from services.notifications.settings import NotificationsSettings
from services.notifications.usecases.codes import Codes
from services.notifications.usecases import (
    CAMPAIGNS, DELIVERY_LOG, DELIVERY_WORKER, DIRECTORY, FANOUT, PREFERENCES, TEMPLATES, WEBHOOKS, Campaigns,
    DeliveryLog, DeliveryWorker, Directory, Fanout, MemberPreferences, Templates, Webhooks,
)

log = get_logger("notifications")


def channels_for(settings: NotificationsSettings, mongo: Mongo, session: ClientSession,
                 webhook_session: ClientSession | None = None) -> dict[str, Channel]:
    """The adapters: sandbox recorders for sms/wechat/push (and email in dev mode), SMTP, signed webhooks."""
    email = EmailChannel(settings.smtp_host, settings.smtp_port, settings.mail_from, username=settings.smtp_username,
                         password=settings.smtp_password, start_tls=settings.smtp_starttls,
                         use_tls=settings.smtp_use_tls, timeout_s=settings.send_timeout_s) \
        if settings.email_via_smtp else RecordingChannel(EMAIL, mongo)
    return {SMS: RecordingChannel(SMS, mongo), WECHAT: RecordingChannel(WECHAT, mongo),
            PUSH: RecordingChannel(PUSH, mongo), SINK: RecordingChannel(SINK, mongo, sandbox=False),
            EMAIL: email, WEBHOOK: WebhookChannel(webhook_session or session, settings.send_timeout_s,
                                                  public_only=not settings.webhooks_may_target_private)}


def create_app(settings: NotificationsSettings | None = None) -> web.Application:
    settings = settings or NotificationsSettings()
    app = create_service_app(settings, indexes=INDEXES, routes=routes, subscribe=subscribe)

    async def use_cases(app: web.Application):
        # Runs after the kit's resources context, so Mongo is up; the HTTP session serves webhooks and
        # calls to membership.
        session = ClientSession(timeout=ClientTimeout(total=settings.send_timeout_s))
        mongo = app[MONGO]
        tokens = ServiceTokenProvider(settings.membership_url, settings.service_name, settings.client_secret)
        membership = ServiceClient("membership", settings.membership_url, session, tokens,
                                   timeout_s=settings.membership_timeout_s)
        orders = ServiceClient("orders", settings.orders_url, session, tokens, timeout_s=settings.orders_timeout_s)
        app[FANOUT] = fanout = Fanout(mongo, app[OUTBOX], settings)
        app[TEMPLATES] = templates = Templates(mongo)
        # Outside dev mode webhooks get their own session, whose resolver lets them reach public addresses only.
        webhook_session = None if settings.webhooks_may_target_private else public_only_session(settings.send_timeout_s)
        app[DELIVERY_WORKER] = DeliveryWorker(mongo, settings, fanout,
                                              channels_for(settings, mongo, session, webhook_session),
                                              Codes(orders, membership))
        app[DELIVERY_LOG] = DeliveryLog(mongo)
        app[DIRECTORY] = Directory(mongo)
        app[PREFERENCES] = MemberPreferences(mongo, settings)
        app[WEBHOOKS] = Webhooks(mongo, settings)
        app[CAMPAIGNS] = Campaigns(mongo, settings, fanout, templates, membership)
        seeded = await templates.seed_defaults()
        if settings.demo_data:
            await load_demo(app[DIRECTORY])
        log.info("notifications.ready", templates_seeded=seeded)
        yield
        await session.close()
        if webhook_session is not None:
            await webhook_session.close()

    app.cleanup_ctx.append(use_cases)
    add_openapi_route(app, "Notifications")
    add_periodic_job(app, "delivery-worker", settings.delivery_poll_interval_s, deliver_due, every_replica=True)
    add_periodic_job(app, "campaign-runner", settings.campaign_poll_interval_s, run_campaigns)
    return app
