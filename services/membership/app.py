from aiohttp import web

from libs.auth import VERIFIER
from libs.openapi import add_openapi_route
from libs.service import MONGO, OUTBOX, add_periodic_job, create_service_app
from services.membership import jobs
from services.membership.consumers import subscribe
from services.membership.handlers import MEMBERSHIP, domain_errors, routes
from services.membership.keys import KeyRing
from services.membership.repository import COLLECTIONS, INDEXES
from services.membership.settings import MembershipSettings
from services.membership.usecases import Membership


def create_app(settings: MembershipSettings | None = None) -> web.Application:
    settings = settings or MembershipSettings()
    app = create_service_app(settings, indexes=INDEXES, routes=routes, subscribe=subscribe)
    app.middlewares.append(domain_errors)
    add_openapi_route(app, "Membership", description="Members, QR attribution, points, tiers, coupons and tokens")

    async def membership_context(app: web.Application):
        # Runs after the kit's resources context, so Mongo and the outbox exist. The key ring is loaded
        # (or created, once for all replicas) before the first request is served.
        mongo = app[MONGO]
        await mongo.ensure_collections(COLLECTIONS)
        keys = KeyRing(mongo, settings.rsa_key_bits, settings.signing_key_passphrase)
        await keys.ensure()
        # This service verifies its own tokens from the key ring in memory, not over the network.
        app[VERIFIER].load_jwks(keys.jwks())
        app[MEMBERSHIP] = Membership(settings, mongo, app[OUTBOX], keys)
        if settings.demo_data:
            from services.membership.demo import load_demo
            await load_demo(app[MEMBERSHIP])
        yield

    app.cleanup_ctx.append(membership_context)
    add_periodic_job(app, "membership-keys-refresh", settings.keyring_refresh_s, jobs.refresh_keys)
    add_periodic_job(app, "membership-dormant", settings.dormant_job_interval_s, jobs.mark_dormant)
    add_periodic_job(app, "membership-points-expiry", settings.expiry_job_interval_s, jobs.expire_points)
    add_periodic_job(app, "membership-coupon-expiry", settings.expiry_job_interval_s, jobs.expire_coupons)
    return app
