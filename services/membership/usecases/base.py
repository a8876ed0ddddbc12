"""What every membership use case stands on: the unit of work, the outbox, the repositories, the policies."""
from __future__ import annotations

from typing import Any

from libs.mongo import Mongo
from libs.outbox import Outbox
from services.membership.domain import otp as otp_rules
from services.membership.domain import points as points_rules
from services.membership.domain.errors import NOT_FOUND, MembershipError
from services.membership.domain.tiers import tier_ladder
from services.membership.repository import (CouponRepository, HoldRepository, LedgerRepository, MemberRepository,
                                            OtpRepository, PurchaseRepository, RefreshTokenRepository,
                                            RevocationRepository, StaffRepository)
from services.membership.settings import MembershipSettings

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS


def member_not_found() -> MembershipError:
    return MembershipError("member-not-found", "member not found", kind=NOT_FOUND)


class UseCase:
    """Repositories are plain handles on collections: each use case holds the ones of this database."""

    def __init__(self, settings: MembershipSettings, mongo: Mongo, outbox: Outbox) -> None:
        self.settings = settings
        self.mongo = mongo
        self.outbox = outbox
        self.staff = StaffRepository(mongo)
        self.otp = OtpRepository(mongo)
        self.refresh_tokens = RefreshTokenRepository(mongo)
        self.revocations = RevocationRepository(mongo)
        self.members = MemberRepository(mongo)
        self.ledger = LedgerRepository(mongo)
        self.coupons = CouponRepository(mongo)
        self.holds = HoldRepository(mongo)
        self.purchases = PurchaseRepository(mongo)
        self.otp_policy = otp_rules.OtpPolicy(settings.otp_ttl_s, settings.otp_max_attempts, settings.otp_max_requests,
                                              settings.otp_request_window_s)
        self.points_policy = points_rules.PointsPolicy(settings.points_per_yuan_earned,
                                                       settings.points_per_yuan_redeemed,
                                                       settings.points_max_redeem_share_pct,
                                                       settings.points_validity_days)
        self.tiers = tier_ladder(settings.tier_thresholds_fen, settings.tier_multipliers)

    async def live_member(self, member_id: str, session) -> dict[str, Any]:
        """The member (following merges) inside a unit of work, or 404."""
        member = await self.members.get_live(member_id, session)
        if member is None:
            raise member_not_found()
        return member

    async def find_member(self, member_id: str) -> dict[str, Any]:
        """The member (following merges) as committed, or 404."""
        member = await self.read(lambda: self.members.get_live(member_id))
        if member is None:
            raise member_not_found()
        return member

    async def read(self, fn):
        """A read that must not see another unit of work's uncommitted writes."""
        return await self.mongo.read_committed(fn)
