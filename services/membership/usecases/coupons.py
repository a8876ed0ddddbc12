"""Coupons: templates, campaigns, issuing into a member's wallet, expiry, and the holds of orders' checkouts."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pymongo.errors import DuplicateKeyError

from libs.clock import now_ms, rfc3339, to_ms, utcnow
from libs.ids import new_id
from libs.mongo import ConcurrencyConflict, refuse_duplicates
from services.membership import metrics
from services.membership.domain import coupons as coupon_rules
from services.membership.domain import holds as hold_rules
from services.membership.domain import points as points_rules
from services.membership.domain.errors import INVALID, NOT_FOUND, MembershipError
from services.membership.events import CouponIssued
from services.membership.usecases.base import UseCase
from services.membership.usecases.loyalty import Points
from services.membership.usecases.views import public_campaign, public_coupon, public_template


def template_doc(t: dict[str, Any]) -> dict[str, Any]:
    """A template as stored, from the API's (or the demo data set's) shape."""
    scope = t.get("scope") or {"type": "all"}
    values = scope.get("categories") or [] if scope["type"] == "categories" else scope.get("skus") or []
    return {"_id": t["id"], "name": t["name"], "kind": t["kind"], "threshold": t.get("threshold") or 0,
            "amount_off": t.get("amount_off"), "percent_off": t.get("percent_off"), "max_off": t.get("max_off"),
            "scope_type": scope["type"], "scope_values": values if scope["type"] != "all" else [],
            "channel": t.get("channel", "any"), "valid_days": t.get("valid_days"),
            "valid_from_ms": _ms(t.get("valid_from")), "valid_until_ms": _ms(t.get("valid_until")),
            "per_member_limit": t.get("per_member_limit", 1), "total_cap": t["total_cap"], "status": "active"}


def _ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return to_ms(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise MembershipError("validation-error", f"not an RFC 3339 time: {value}", kind=INVALID) from None


class Coupons(UseCase):
    """Templates and campaigns (HQ), coupons issued to members, and the sweep of expired ones."""

    async def why_not_issuable(self, template: dict | None, member_id: str, now: int, session) -> str | None:
        """Why a coupon of `template` cannot be issued to the member now (None when it can)."""
        if template is None:
            return "template-missing"
        try:
            coupon_rules.check_issuable(template, now)
        except MembershipError as exc:
            return exc.code
        if template.get("issued_count", 0) >= template["total_cap"]:
            return "coupon-cap-reached"
        count = await self.coupons.member_count(template["_id"], member_id, session)
        if count >= template.get("per_member_limit", 1):
            return "coupon-limit-reached"
        return None

    async def issue_in(self, session, member: dict, template: dict, now: int,
                       campaign_id: str | None = None) -> dict:
        """Issue one coupon of `template` to `member` within the unit of work in progress."""
        coupon_rules.check_issuable(template, now)
        if not await self.coupons.take_from_cap(template["_id"], template["total_cap"], session):
            raise MembershipError("coupon-cap-reached", f"coupon template {template['_id']} is exhausted")
        if not await self.coupons.take_member_allowance(template["_id"], member["_id"],
                                                        template.get("per_member_limit", 1), session):
            raise MembershipError("coupon-limit-reached",
                                  f"member already holds the maximum of template {template['_id']}")
        start, until = coupon_rules.coupon_validity(template, now)
        coupon = {"_id": new_id("cpn"), "template_id": template["_id"], "name": template.get("name"),
                  "member_id": member["_id"], "state": coupon_rules.ISSUED, "kind": template["kind"],
                  "threshold": template.get("threshold", 0), "amount_off": template.get("amount_off"),
                  "percent_off": template.get("percent_off"), "max_off": template.get("max_off"),
                  "scope_type": template["scope_type"], "scope_values": template.get("scope_values", []),
                  "channel": template["channel"], "valid_from_ms": start, "valid_until_ms": until,
                  "campaign_id": campaign_id, "order_id": None, "issued_at": utcnow(), "issued_at_ms": now}
        await self.coupons.add(coupon, session)
        await self.outbox.record(session, CouponIssued(
            member_id=member["_id"], coupon_code=coupon["_id"], template_id=template["_id"],
            name=template.get("name") or template["_id"], campaign_id=campaign_id, valid_until=rfc3339(until),
            phone=member.get("phone"), email=member.get("email"), locale=member.get("locale") or "zh-CN"),
            subject=member["_id"])
        self.mongo.after_commit(lambda: metrics.COUPONS.labels("issued").inc())
        return coupon

    async def issue(self, member_id: str, template_id: str) -> dict[str, Any]:
        async def unit(session):
            member = await self.live_member(member_id, session)
            template = await self.coupons.template(template_id, session)
            if template is None:
                raise MembershipError("unknown-coupon-template", f"no coupon template {template_id}", kind=INVALID)
            return public_coupon(await self.issue_in(session, member, template, now_ms()))

        return await self.mongo.transaction(unit)

    async def create_template(self, template: dict[str, Any], replace: bool = False) -> dict[str, Any]:
        """A new template (HQ); `replace` (the demo loader) keeps an existing one and its issue counter."""
        coupon_rules.validate_template(template)
        exists = MembershipError("coupon-template-exists", f"template {template['_id']} exists")

        async def unit(session):
            if replace:
                await self.coupons.upsert_template(template, session)
            elif await self.coupons.template(template["_id"], session) is not None:
                raise exists
            else:
                with refuse_duplicates(exists.code, exists.detail):
                    await self.coupons.put_template({**template, "issued_count": 0}, session)
            return public_template(await self.coupons.template(template["_id"], session))

        return await self.mongo.transaction(unit)

    async def create_campaign(self, campaign: dict[str, Any], replace: bool = False) -> dict[str, Any]:
        exists = MembershipError("campaign-exists", f"campaign {campaign['_id']} exists")

        async def unit(session):
            if campaign.get("coupon_template_id") and \
                    await self.coupons.template(campaign["coupon_template_id"], session) is None:
                raise MembershipError("unknown-coupon-template",
                                      f"no coupon template {campaign['coupon_template_id']}", kind=INVALID)
            if not replace and await self.coupons.campaign(campaign["_id"], session) is not None:
                raise exists
            with refuse_duplicates(exists.code, exists.detail):
                await self.coupons.put_campaign(campaign, session, replace=replace)
            return public_campaign(campaign)

        return await self.mongo.transaction(unit)

    async def templates(self) -> list[dict[str, Any]]:
        return [public_template(d) for d in await self.read(self.coupons.templates_list)]

    async def campaigns(self) -> list[dict[str, Any]]:
        return [public_campaign(d) for d in await self.read(self.coupons.campaigns_list)]

    async def wallet(self, member_id: str, state: str | None = None) -> list[dict[str, Any]]:
        """A member's coupons; an issued coupon past its end shows as expired even before the sweep ran."""
        member = await self.find_member(member_id)
        docs = await self.read(lambda: self.coupons.of_member(member["_id"], state))
        now = now_ms()
        for doc in docs:
            if doc["state"] == coupon_rules.ISSUED and doc["valid_until_ms"] <= now:
                doc["state"] = coupon_rules.EXPIRED
        return [public_coupon(d) for d in docs]

    async def expire(self, now: int | None = None) -> int:
        """Mark issued coupons past their end as expired; returns how many."""
        now = now or now_ms()
        expired = 0
        for coupon in await self.read(lambda: self.coupons.expired_issued(now)):
            async def unit(session, code=coupon["_id"]):
                return await self.coupons.move_state(code, coupon_rules.ISSUED, {"state": coupon_rules.EXPIRED},
                                                     session)

            expired += bool(await self.mongo.transaction(unit))
        return expired


class CheckoutHolds(UseCase):
    """Orders' checkout contract: coupons locked and points reserved for one order, then committed or released.

    A release is sticky: releasing an order that holds nothing leaves a tombstone, so a hold that arrives after
    its release (a timed-out call, a swept checkout) is refused and takes nothing. Holds expire
    (`expire`, a periodic job) unless committed.
    """

    def __init__(self, *args, points: Points) -> None:
        super().__init__(*args)
        self.points = points

    async def hold(self, order_id: str, member_id: str, channel: str, coupon_codes: list[str], points: int,
                   lines: list[dict[str, Any]], ttl_s: int | None = None) -> dict[str, Any]:
        """Lock the coupons and debit the points for an order; the same order again gets the same answer."""
        codes = list(dict.fromkeys(coupon_codes))
        expires = hold_rules.expiry_ms(now_ms(), ttl_s, self.settings.hold_ttl_s, self.settings.hold_max_ttl_s)

        async def unit(session):
            existing = await self.holds.get(order_id, session)
            if existing is not None:
                return self._replay(existing, member_id)
            return await self._new_hold(session, order_id, member_id, channel, codes, points, lines, expires)

        try:
            answer = await self.mongo.transaction(unit)
        except MembershipError as refusal:
            _count_refusal(refusal)
            raise
        discount = answer["coupon_discount"] + answer["points_discount"]

        def count() -> None:
            metrics.HOLDS.labels("held").inc()
            metrics.HOLD_DISCOUNT.observe(discount)

        self.mongo.after_commit(count)
        return answer

    async def _new_hold(self, session, order_id: str, member_id: str, channel: str, codes: list[str], points: int,
                        lines: list[dict[str, Any]], expires_at_ms: int) -> dict[str, Any]:
        now = now_ms()
        member = await self.members.get_live(member_id, session)
        if member is None:
            raise MembershipError("unknown-member", f"member {member_id} does not exist", kind=INVALID)
        coupons = []
        for code in codes:
            coupon = await self.coupons.get(code, session)
            if coupon is None or coupon["member_id"] != member["_id"]:
                raise MembershipError("coupon-unavailable", f"coupon {code} is not available to this member",
                                      coupon_code=code)
            coupons.append(coupon)
        applied = coupon_rules.apply_coupons(coupons, lines, channel, now)
        subtotal = sum(line["unit_price"] * line["qty"] for line in lines)
        coupon_discount = sum(a["discount"] for a in applied)
        points_used, points_discount = points_rules.redemption(points, subtotal - coupon_discount, self.points_policy)
        if points_used > member.get("points_balance", 0):
            raise MembershipError(
                "insufficient-points", f"{points} points were asked for ({points_used} of them usable on this "
                f"order), but the balance is {member.get('points_balance', 0)}",
                requested=points, usable=points_used, balance=member.get("points_balance", 0))
        for code in (a["code"] for a in applied):
            if not await self.coupons.move_state(code, coupon_rules.ISSUED, {
                    "state": coupon_rules.LOCKED, "order_id": order_id, "locked_at_ms": now}, session):
                raise MembershipError("coupon-unavailable", f"coupon {code} was taken by another order",
                                      coupon_code=code)
        if points_used:
            await self.points.post(session, member, -points_used, points_rules.HOLD, order_id=order_id, at_ms=now)
        answer = {"order_id": order_id, "member_id": member["_id"], "coupon_discount": coupon_discount,
                  "points_discount": points_discount, "points_used": points_used,
                  "coupons": applied, "expires_at": rfc3339(expires_at_ms)}
        try:
            await self.holds.add({"_id": order_id, "member_id": member["_id"], "requested_member_id": member_id,
                                  "state": hold_rules.HELD, "coupon_codes": [a["code"] for a in applied],
                                  "points_used": points_used, "points_returned": 0, "response": answer,
                                  "created_at": utcnow(), "created_at_ms": now, "expires_at_ms": expires_at_ms},
                                 session)
        except DuplicateKeyError:
            # Another replica stored this order's hold or release first: run again and answer from what it stored.
            raise ConcurrencyConflict(f"hold {order_id} stored concurrently") from None
        for _ in applied:
            self.mongo.after_commit(lambda: metrics.COUPONS.labels("locked").inc())
        return answer

    @staticmethod
    def _replay(existing: dict, member_id: str) -> dict:
        hold_rules.check_holdable(existing)
        if member_id not in (existing["member_id"], existing.get("requested_member_id")):
            raise MembershipError("hold-exists", "this order already holds benefits of another member")
        return existing["response"]

    async def commit(self, order_id: str) -> dict[str, Any]:
        """The order is paid: its coupons are redeemed for good (points were debited at the hold)."""
        try:
            return await self._settle(order_id, self._commit_in)
        except MembershipError as refusal:
            _count_refusal(refusal)
            raise

    async def release(self, order_id: str) -> dict[str, Any]:
        """Give an order's coupons and points back (order cancelled, paid or not). Idempotent.

        An order that holds nothing yet gets a tombstone (a released hold of nothing): its later hold is refused,
        so a release that overtakes its hold (a timed-out call, a swept checkout) still wins."""
        return await self._settle(order_id, self._release_in, release=True)

    async def expire(self, now: int | None = None) -> int:
        """Release the holds still held past their expiry, as orders' release would; returns how many."""
        now = now or now_ms()
        expired = 0
        for hold in await self.read(lambda: self.holds.expired_held(now)):
            async def unit(session, order_id=hold["_id"]):
                current = await self.holds.get(order_id, session)
                if current is None or not hold_rules.is_expired(current, now):
                    return False  # committed or released meanwhile
                await self._give_back(session, current, hold_rules.BY_EXPIRY)
                return True

            if await self.mongo.transaction(unit):
                expired += 1
        return expired

    async def _settle(self, order_id: str, step, release: bool = False) -> dict[str, Any]:
        """Run `step(session, hold)` on the order's hold in one unit of work."""
        async def unit(session):
            hold = await self.holds.get(order_id, session)
            if hold is None:
                if release:
                    return await self._leave_tombstone(session, order_id)
                raise MembershipError("hold-not-found", f"no checkout hold for order {order_id}", kind=NOT_FOUND)
            return await step(session, hold)

        return await self.mongo.transaction(unit)

    async def _leave_tombstone(self, session, order_id: str) -> dict[str, Any]:
        try:
            await self.holds.add(hold_rules.tombstone(order_id, now_ms()), session)
        except DuplicateKeyError:
            # The hold was stored concurrently: run again and release it.
            raise ConcurrencyConflict(f"hold {order_id} stored concurrently") from None
        self.mongo.after_commit(lambda: metrics.HOLDS.labels("released").inc())
        return {"order_id": order_id, "state": "released", "coupon_codes": [], "points_returned": 0}

    async def _commit_in(self, session, hold: dict) -> dict[str, Any]:
        hold_rules.check_committable(hold)
        if hold["state"] == hold_rules.HELD:
            await self._redeem(session, hold)
            self.mongo.after_commit(lambda: metrics.HOLDS.labels("committed").inc())
        return {"order_id": hold["_id"], "state": "committed", "coupon_codes": hold["coupon_codes"],
                "points_used": hold["points_used"]}

    async def _redeem(self, session, hold: dict) -> None:
        order_id = hold["_id"]
        for code in hold["coupon_codes"]:
            coupon = await self.coupons.get(code, session)
            coupon_rules.transition(coupon, coupon_rules.REDEEMED)
            if coupon.get("order_id") != order_id or not await self.coupons.move_state(
                    code, coupon_rules.LOCKED, {"state": coupon_rules.REDEEMED, "redeemed_at_ms": now_ms()}, session):
                raise ConcurrencyConflict(f"coupon {code} moved under the hold")
            self.mongo.after_commit(lambda: metrics.COUPONS.labels("redeemed").inc())
        if not await self.holds.move_state(order_id, hold_rules.HELD, hold_rules.COMMITTED, session,
                                           committed_at_ms=now_ms()):
            raise ConcurrencyConflict(f"hold {order_id} moved")  # expired or released meanwhile: decide again

    async def _release_in(self, session, hold: dict) -> dict[str, Any]:
        if hold["state"] in (hold_rules.HELD, hold_rules.COMMITTED):
            await self._give_back(session, hold, hold_rules.BY_ORDER)
        return {"order_id": hold["_id"], "state": "released", "coupon_codes": hold["coupon_codes"],
                "points_returned": hold["points_used"]}

    async def _give_back(self, session, hold: dict, reason: str) -> None:
        order_id = hold["_id"]
        from_state = coupon_rules.LOCKED if hold["state"] == hold_rules.HELD else coupon_rules.REDEEMED
        for code in hold["coupon_codes"]:
            if await self.coupons.move_state(code, from_state, {"state": coupon_rules.ISSUED, "order_id": None},
                                             session):
                self.mongo.after_commit(lambda: metrics.COUPONS.labels("released").inc())
        back = hold["points_used"] - hold.get("points_returned", 0)
        if back > 0:
            member = await self.members.get_live(hold["member_id"], session)
            await self.points.post(session, member, back, points_rules.RELEASE, order_id=order_id)
        if not await self.holds.move_state(order_id, hold["state"], hold_rules.RELEASED, session,
                                           released_at_ms=now_ms(), points_returned=hold["points_used"],
                                           release_reason=reason):
            raise ConcurrencyConflict(f"hold {order_id} moved")
        outcome = "expired" if reason == hold_rules.BY_EXPIRY else "released"
        self.mongo.after_commit(lambda: metrics.HOLDS.labels(outcome).inc())


def _count_refusal(refusal: MembershipError) -> None:
    metrics.HOLDS.labels("refused-after-release" if refusal.code == "hold-released" else refusal.code).inc()


COUPONS = web.AppKey("coupons", Coupons)
CHECKOUT_HOLDS = web.AppKey("checkout_holds", CheckoutHolds)
__all__ = ["CHECKOUT_HOLDS", "COUPONS", "CheckoutHolds", "Coupons", "template_doc"]
