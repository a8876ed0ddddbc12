"""Request and response models of membership's HTTP API (documented in its OpenAPI document)."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from libs.models import CURSOR, Strict

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Text = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Locale = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")]
# International format; spaces and dashes are tolerated and removed.
Phone = Annotated[str, StringConstraints(min_length=8, max_length=32, pattern=r"^\+[1-9][0-9 \-]{6,30}$")]
OtpCode = Annotated[str, StringConstraints(pattern=r"^\d{4,8}$")]
Password = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Cursor = Annotated[str, StringConstraints(max_length=400)] | None


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    refresh_token: str | None = Field(None, description="members and staff: single use, see /auth/token/refresh")
    refresh_expires_in: int | None = None
    password_change_required: bool | None = Field(None, description="staff: HQ reset the password; change it")


class RefreshRequest(Strict):
    refresh_token: Annotated[str, StringConstraints(min_length=16, max_length=256)]


class OtpSent(BaseModel):
    phone: str
    expires_in: int
    dev_code: str | None = Field(None, description="only in dev mode")


class AttributionOut(BaseModel):
    member_id: str
    store_id: str | None
    staff_id: str | None
    campaign_id: str | None
    bound_until: str | None


class CouponOut(BaseModel):
    code: str
    template_id: str
    name: str | None
    state: Literal["issued", "locked", "redeemed", "expired"]
    kind: Literal["amount_off", "percent_off"]
    threshold: int
    amount_off: int | None
    percent_off: int | None
    max_off: int | None
    scope: dict
    channel: Literal["online", "in_store", "any"]
    valid_from: str
    valid_until: str
    campaign_id: str | None
    order_id: str | None


class CouponPage(BaseModel):
    items: list[CouponOut]
    next_cursor: str | None


class MemberOut(BaseModel):
    id: str
    status: str
    name: str | None
    phone: str | None
    email: str | None
    locale: str | None
    marketing_consent: bool
    tags: list[str]
    tier: str
    points_balance: int
    dormant: bool
    created_at: str | None
    attribution: AttributionOut
    identities: list[dict] = []


class MemberPage(BaseModel):
    items: list[MemberOut]
    next_cursor: str | None


class LedgerEntryOut(BaseModel):
    id: str
    kind: str
    amount: int
    order_id: str | None
    at: str
    expires_at: str | None


class PointsOut(BaseModel):
    member_id: str
    balance: int = Field(description="negative while the member owes clawed-back points (a debt)")
    debt: int = Field(description="points owed after a refund clawed back more than was left; later earnings "
                                  "pay it off first, and nothing can be spent meanwhile")
    expiring_within_30_days: int
    items: list[LedgerEntryOut]
    next_cursor: str | None


class ScanOut(BaseModel):
    member_id: str
    created: bool
    bound_now: bool
    tags: list[str]
    attribution: AttributionOut
    coupons_issued: list[CouponOut]
    coupon_skipped: str | None = Field(None, description="why no campaign coupon was issued, e.g. "
                                                         "member-not-present for a staff identity scan")
    scan_token: str | None = Field(None, description="a member's own scan: name it at checkout "
                                                     "(attribution.scan_token) to credit this QR; short-lived")
    scan_token_expires_at: str | None = None


# == /auth =====================================================================================

class ServiceCredentials(Strict):
    client_id: Text
    client_secret: Password
    audience: Id = Field(description="the service the token is for (catalog, stock, orders, membership, ...)")


class StaffCredentials(Strict):
    username: Text
    password: Password


class OtpRequest(Strict):
    phone: Phone
    locale: Locale = "zh-CN"


class OtpLogin(Strict):
    phone: Phone
    code: OtpCode
    locale: Locale | None = None


class PasswordChange(Strict):
    current_password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    new_password: Annotated[str, StringConstraints(min_length=10, max_length=256)]


class ProfileChange(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=200)] | None = None
    locale: Locale | None = None
    marketing_consent: bool | None = None


class PageQuery(Strict):
    cursor: Cursor = CURSOR
    limit: int = Field(50, ge=1, le=200)


class CouponQuery(Strict):
    state: Literal["issued", "locked", "redeemed", "expired"] | None = None


class PhoneLink(Strict):
    phone: Phone
    code: OtpCode


class Identity(Strict):
    kind: Literal["wechat_openid", "wechat_unionid", "marketplace_buyer_id"]
    value: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Scan(Strict):
    code: Id
    identity: Identity | None = None
    locale: Locale = "zh-CN"
    marketing_consent: bool | None = None


class HoldLine(Strict):
    sku_id: Id
    category: Annotated[str, StringConstraints(max_length=100)] | None = None
    qty: int = Field(ge=1, le=10_000)
    unit_price: int = Field(ge=0, le=100_000_000)


class HoldRequest(Strict):
    order_id: Id
    member_id: Id
    channel: Literal["app", "mini_program", "marketplace", "store"]
    coupon_codes: list[Id] = Field(default_factory=list, max_length=10)
    points: int = Field(0, ge=0, le=100_000_000)
    lines: list[HoldLine] = Field(min_length=1, max_length=200)
    ttl_s: int | None = Field(None, ge=1, le=30 * 86400, description="how long the hold lasts unless committed "
                              "(orders' payment window plus a margin); default MEMBERSHIP_HOLD_TTL_S")


class AttributionQuery(Strict):
    scan_token: Annotated[str, StringConstraints(min_length=16, max_length=100)] | None = None


class AudienceQuery(Strict):
    tag: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    store_id: Id | None = None
    cursor: Cursor = CURSOR
    limit: int = Field(200, ge=1, le=1000)


class MemberSearch(Strict):
    tag: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    phone: Annotated[str, StringConstraints(max_length=32)] | None = None
    store_id: Id | None = None
    dormant: bool | None = None
    cursor: Cursor = CURSOR
    limit: int = Field(50, ge=1, le=200)


class Scope(Strict):
    type: Literal["all", "categories", "skus"] = "all"
    categories: list[Id] = Field(default_factory=list, max_length=100)
    skus: list[Id] = Field(default_factory=list, max_length=1000)


class NewTemplate(Strict):
    id: Id
    name: Text
    kind: Literal["amount_off", "percent_off"]
    threshold: int = Field(0, ge=0)
    amount_off: int | None = Field(None, ge=1)
    percent_off: int | None = Field(None, ge=1, le=99)
    max_off: int | None = Field(None, ge=1)
    scope: Scope = Field(default_factory=Scope)
    channel: Literal["online", "in_store", "any"] = "any"
    valid_days: int | None = Field(None, ge=1, le=3650)
    valid_from: str | None = None
    valid_until: str | None = None
    per_member_limit: int = Field(1, ge=1, le=1000)
    total_cap: int = Field(ge=1, le=100_000_000)

    @model_validator(mode="after")
    def _shape(self):
        if self.kind == "amount_off" and self.amount_off is None:
            raise ValueError("an amount_off template needs amount_off (fen)")
        if self.kind == "percent_off" and (self.percent_off is None or self.max_off is None):
            raise ValueError("a percent_off template needs percent_off and max_off (fen)")
        if self.valid_days is None and self.valid_until is None:
            raise ValueError("give valid_days or valid_until")
        return self


class NewCampaign(Strict):
    id: Id
    name: Text
    tag: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    coupon_template_id: Id | None = None


class NewQr(Strict):
    code: Id
    kind: Literal["store", "staff", "campaign"]
    store_id: Id | None = None
    staff_id: Id | None = None
    campaign_id: Id | None = None

    @model_validator(mode="after")
    def _shape(self):
        if self.kind in ("store", "staff") and not self.store_id:
            raise ValueError(f"a {self.kind} QR code needs store_id")
        if self.kind == "staff" and not self.staff_id:
            raise ValueError("a staff QR code needs staff_id")
        if self.kind == "campaign" and not self.campaign_id:
            raise ValueError("a campaign QR code needs campaign_id")
        return self


class QrQuery(Strict):
    store_id: Id | None = None


StaffRole = Literal["store_staff", "store_manager", "franchisee", "hq_admin"]


class StaffAccess(Strict):
    """What a staff account may do: its roles and stores (HQ changes them; earlier tokens stop counting)."""
    roles: list[StaffRole] = Field(min_length=1, max_length=4)
    store_ids: list[Id] = Field(default_factory=list, max_length=500)
    franchisee_id: Id | None = None

    @model_validator(mode="after")
    def _shape(self):
        if {"store_staff", "store_manager"} & set(self.roles) and not self.store_ids:
            raise ValueError("store staff and managers need at least one store_id")
        if "franchisee" in self.roles and not self.franchisee_id:
            raise ValueError("a franchisee account needs franchisee_id")
        return self


class PasswordReset(Strict):
    """HQ's temporary password for a staff account; every login of the account ends."""
    temporary_password: Annotated[str, StringConstraints(min_length=10, max_length=256)]


class NewStaff(StaffAccess):
    id: Annotated[str, StringConstraints(pattern=r"^stf_[A-Za-z0-9_]{1,60}$")]
    username: Annotated[str, StringConstraints(pattern=r"^[a-z0-9._-]{3,64}$")]
    password: Annotated[str, StringConstraints(min_length=10, max_length=256)]
    name: Text


class Merge(Strict):
    member_id: Id
    other_member_id: Id


class IssueCoupon(Strict):
    template_id: Id


class PointsAdjustment(Strict):
    delta: int = Field(ge=-10_000_000, le=10_000_000)
    note: Text

    @model_validator(mode="after")
    def _non_zero(self):
        if self.delta == 0:
            raise ValueError("delta cannot be 0")
        return self
