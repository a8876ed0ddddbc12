from aiohttp import ClientSession, ClientTimeout, web

from libs.clients import ServiceClient, ServiceTokenProvider
from libs.logging import get_logger
from libs.service import MONGO, add_periodic_job, create_service_app
from services.notifications.channels.email import EmailChannel
from services.notifications.channels.recording import RecordingChannel
from services.notifications.channels.webhook import WebhookChannel
from services.notifications.consumers import subscribe
from services.notifications.demo import load_demo
from services.notifications.domain.rules import EMAIL, LOCALES, PUSH, SINK, SMS, WEBHOOK, WECHAT, template_keys
from services.notifications.domain.templates import default_for
from services.notifications.handlers import routes
from services.notifications.jobs import CHANNELS, MEMBERSHIP, deliver_due, run_campaigns
from services.notifications.repository import INDEXES, TemplateRepository
from services.notifications.settings import NotificationsSettings

log = get_logger("notifications")


async def seed_templates(app: web.Application) -> int:
    """Store the default templates that are not stored yet (edited ones are kept)."""
    repo = TemplateRepository(app[MONGO])

    async def unit(session):
        seeded = 0
        for template_type, channel in template_keys():
            for locale in LOCALES:
                subject, body = default_for(template_type, channel, locale)
                seeded += await repo.seed(template_type, channel, locale, subject, body, session)
        return seeded

    return await app[MONGO].transaction(unit)


def create_app(settings: NotificationsSettings | None = None) -> web.Application:
    settings = settings or NotificationsSettings()
    app = create_service_app(settings, indexes=INDEXES, routes=routes, subscribe=subscribe)

    async def channels(app: web.Application):
        # Runs after the kit's resources context, so Mongo is up; the HTTP session serves webhooks and
        # calls to membership.
        session = ClientSession(timeout=ClientTimeout(total=settings.send_timeout_s))
        mongo = app[MONGO]
        app[CHANNELS] = {
            SMS: RecordingChannel(SMS, mongo), WECHAT: RecordingChannel(WECHAT, mongo),
            PUSH: RecordingChannel(PUSH, mongo), SINK: RecordingChannel(SINK, mongo, sandbox=False),
            EMAIL: EmailChannel(settings.smtp_host, settings.smtp_port, settings.mail_from,
                                username=settings.smtp_username, password=settings.smtp_password,
                                start_tls=settings.smtp_starttls, use_tls=settings.smtp_use_tls,
                                timeout_s=settings.send_timeout_s)
            if settings.email_via_smtp else RecordingChannel(EMAIL, mongo),
            WEBHOOK: WebhookChannel(session, settings.send_timeout_s),
        }
        tokens = ServiceTokenProvider(settings.membership_url, settings.service_name, settings.service_client_secret)
        app[MEMBERSHIP] = ServiceClient("membership", settings.membership_url, session, tokens,
                                        timeout_s=settings.membership_timeout_s)
        seeded = await seed_templates(app)
        if settings.demo_data:
            await load_demo(mongo)
        log.info("notifications.ready", templates_seeded=seeded)
        yield
        await session.close()

    app.cleanup_ctx.append(channels)
    add_periodic_job(app, "delivery-worker", settings.delivery_poll_interval_s, deliver_due)
    add_periodic_job(app, "campaign-runner", settings.campaign_poll_interval_s, run_campaigns)
    return app
