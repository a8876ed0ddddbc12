"""Integration events membership publishes (past tense; never renamed).

Contact details (phone, email, locale) ride along where notifications needs them, so nobody calls back.
"""
from __future__ import annotations

from libs.bus import IntegrationEvent


class OtpRequested(IntegrationEvent):
    """A code is to be sent to `phone`. The code is not in the event (every consumer and the audit queue see
    it): notifications fetches it from membership when it sends the SMS."""
    event_type = "membership.otp.requested"
    phone: str
    locale: str
    expires_in: int


class MemberRegistered(IntegrationEvent):
    event_type = "membership.member.registered"
    member_id: str
    phone: str | None = None
    email: str | None = None
    locale: str
    source: str                     # otp | scan | admin | demo
    store_id: str | None = None
    staff_id: str | None = None
    campaign_id: str | None = None
    marketing_consent: bool = False


class MemberMerged(IntegrationEvent):
    event_type = "membership.member.merged"
    member_id: str                  # the survivor
    merged_member_id: str           # absorbed; its id now resolves to the survivor
    points_moved: int
    coupons_moved: int
    points_balance: int


class PointsChanged(IntegrationEvent):
    event_type = "membership.points.changed"
    member_id: str
    delta: int
    balance: int
    reason: str                     # earn | hold | release | refund | clawback | expire | opening | adjust
    order_id: str | None = None
    phone: str | None = None
    locale: str = "zh-CN"


class CouponIssued(IntegrationEvent):
    event_type = "membership.coupon.issued"
    member_id: str
    coupon_code: str
    template_id: str
    name: str
    campaign_id: str | None = None
    valid_until: str
    phone: str | None = None
    email: str | None = None
    locale: str = "zh-CN"


class TierChanged(IntegrationEvent):
    event_type = "membership.tier.changed"
    member_id: str
    from_tier: str
    to_tier: str
    rolling_paid: int
    phone: str | None = None
    locale: str = "zh-CN"


class MemberDormant(IntegrationEvent):
    event_type = "membership.member.dormant"
    member_id: str
    last_activity_at: str
    dormant_after_days: int
    phone: str | None = None
    email: str | None = None
    locale: str = "zh-CN"
    marketing_consent: bool = False
