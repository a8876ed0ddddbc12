"""The membership application: the kit's service app, its use cases built once, the key ring, the jobs."""
from aiohttp import web

from libs.auth import VERIFIER
from libs.openapi import add_openapi_route
from libs.service import MONGO, OUTBOX, add_periodic_job, create_service_app
from services.membership import jobs
from services.membership.consumers import subscribe
from services.membership.handlers import routes
from services.membership.keys import KeyRing
from services.membership.repository import COLLECTIONS, INDEXES
from services.membership.settings import MembershipSettings
from services.membership.usecases import (ANALYTICS, CHECKOUT_HOLDS, CODES, COUPONS, KEYS, MEMBERS, MERGES, POINTS,
                                          PURCHASES, QR_CODES, SCANS, STAFF, TIERS, TOKENS, Analytics, CheckoutHolds,
                                          Codes, Coupons, Keys, Members, Merges, Points, Purchases, QrCodes, Scans,
                                          StaffAccounts, Tiers, Tokens)


def create_app(settings: MembershipSettings | None = None) -> web.Application:
    settings = settings or MembershipSettings()
    app = create_service_app(settings, indexes=INDEXES, routes=routes, subscribe=subscribe)
    add_openapi_route(app, "Membership", description="Members, QR attribution, points, tiers, coupons and tokens")

    async def use_cases(app: web.Application):
        # Runs after the kit's resources context, so Mongo and the outbox exist. The key ring is loaded
        # (or created, once for all replicas) before the first request is served.
        mongo = app[MONGO]
        await mongo.ensure_collections(COLLECTIONS)
        base = (settings, mongo, app[OUTBOX])
        app[KEYS] = keys = Keys(KeyRing(mongo, settings.rsa_key_bits, settings.signing_key_passphrase), app[VERIFIER])
        await keys.start()
        app[TOKENS] = tokens = Tokens(*base, keys=keys)
        app[POINTS] = points = Points(*base)
        app[MEMBERS] = members = Members(*base, points=points)
        app[CODES] = codes = Codes(*base, tokens=tokens, members=members)
        app[STAFF] = StaffAccounts(*base, tokens=tokens)
        app[TIERS] = tiers = Tiers(*base)
        app[ANALYTICS] = Analytics(*base)
        app[COUPONS] = coupons = Coupons(*base)
        app[CHECKOUT_HOLDS] = checkout = CheckoutHolds(*base, points=points)
        app[PURCHASES] = Purchases(*base, points=points, tiers=tiers, checkout=checkout)
        app[SCANS] = Scans(*base, members=members, coupons=coupons)
        app[QR_CODES] = QrCodes(*base)
        app[MERGES] = Merges(*base, codes=codes, tokens=tokens, tiers=tiers)
        if settings.demo_data:
            from services.membership.demo import load_demo
            await load_demo(app)
        yield

    app.cleanup_ctx.append(use_cases)
    add_periodic_job(app, "membership-keys-refresh", settings.keyring_refresh_s, jobs.refresh_keys, every_replica=True)
    add_periodic_job(app, "membership-dormant", settings.dormant_job_interval_s, jobs.mark_dormant)
    add_periodic_job(app, "membership-points-expiry", settings.expiry_job_interval_s, jobs.expire_points)
    add_periodic_job(app, "membership-coupon-expiry", settings.expiry_job_interval_s, jobs.expire_coupons)
    add_periodic_job(app, "membership-hold-expiry", settings.hold_expiry_job_interval_s, jobs.expire_holds)
    return app
