"""Loyalty: the points ledger, tiers by the rolling year, and what orders' events do to both (plus analytics)."""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from aiohttp import web

from libs.clock import now_ms, rfc3339, utcnow
from libs.mongo import ConcurrencyConflict
from libs.pagination import decode_cursor, page_of
from services.membership import metrics
from services.membership.domain import coupons as coupon_rules
from services.membership.domain import members as member_rules
from services.membership.domain import points as points_rules
from services.membership.domain.tiers import multiplier_of, tier_for
from services.membership.events import PointsChanged, TierChanged
from services.membership.usecases.base import DAY_MS, YEAR_MS, UseCase
from services.membership.usecases.views import public_entry

if TYPE_CHECKING:
    from services.membership.usecases.coupons import CheckoutHolds

LEDGER_SCOPE = "members.points"


class Points(UseCase):
    """The append-only ledger and the guarded balance counter that moves with it."""

    async def post(self, session, member: dict, delta: int, kind: str, *, order_id: str | None = None,
                   at_ms: int | None = None, note: str | None = None) -> int:
        """Append one ledger entry and move the guarded balance counter with it; returns the new balance.
        Only a claw-back may take the balance below zero (a debt)."""
        if delta == 0:
            return member.get("points_balance", 0)
        if not await self.members.change_points(member["_id"], delta, session,
                                                allow_debt=kind == points_rules.CLAWBACK):
            current = await self.members.get(member["_id"], session)
            points_rules.ensure_covered(current.get("points_balance", 0), -delta)
            raise ConcurrencyConflict("points balance moved")  # covered now: retry the whole unit
        at = at_ms or now_ms()
        entry = {"_id": f"pts_{at:013d}{secrets.token_hex(5)}", "member_id": member["_id"], "amount": delta,
                 "kind": kind, "order_id": order_id, "at": utcnow(), "at_ms": at, "note": note}
        if kind in points_rules.LOT_KINDS and delta > 0:
            entry["expires_at_ms"] = points_rules.lot_expiry_ms(at, self.points_policy)
        await self.ledger.append(entry, session)
        balance = (await self.members.get(member["_id"], session))["points_balance"]
        await self.outbox.record(session, PointsChanged(
            member_id=member["_id"], delta=delta, balance=balance, reason=kind, order_id=order_id,
            phone=member.get("phone"), locale=member.get("locale") or "zh-CN"), subject=member["_id"])
        self.mongo.after_commit(lambda: metrics.POINTS.labels(kind).inc(abs(delta)))
        return balance

    async def view(self, member_id: str, cursor: str | None, limit: int) -> dict[str, Any]:
        """The balance, what expires within 30 days, and one page of the ledger (newest first)."""
        after = decode_cursor(cursor, LEDGER_SCOPE)
        member = await self.find_member(member_id)
        entries = await self.read(lambda: self.ledger.page(member["_id"], after, limit + 1))
        all_entries = await self.read(lambda: self.ledger.entries(member["_id"]))
        soon = now_ms() + 30 * DAY_MS
        balance = member.get("points_balance", 0)
        return {"member_id": member["_id"], "balance": balance, "debt": max(0, -balance),
                "expiring_within_30_days": points_rules.expiring_now(all_entries, soon),
                **page_of(entries, limit, scope=LEDGER_SCOPE, view=public_entry)}

    async def adjust(self, member_id: str, delta: int, note: str) -> dict[str, Any]:
        """A manual correction by HQ."""
        async def unit(session):
            member = await self.live_member(member_id, session)
            balance = await self.post(session, member, delta, points_rules.ADJUST, note=note)
            return {"member_id": member["_id"], "delta": delta, "balance": balance}

        return await self.mongo.transaction(unit)

    async def expire(self, now: int | None = None) -> int:
        """Expire what is left of lots past their validity, first in first out. Returns points expired."""
        now = now or now_ms()
        member_ids = await self.read(lambda: self.ledger.members_with_lots_expiring(now))
        total = 0
        for member_id in member_ids:
            async def unit(session, member_id=member_id):
                member = await self.members.get(member_id, session)
                if member is None or member.get("status") != "active":
                    return 0
                due = points_rules.expiring_now(await self.ledger.entries(member_id, session), now)
                if due > 0:
                    await self.post(session, member, -due, points_rules.EXPIRE, at_ms=now)
                return due

            total += await self.mongo.transaction(unit)
        return total


class Tiers(UseCase):
    """Tiers by the paid amount of the rolling 12 months."""

    async def retier(self, session, member_id: str) -> None:
        member = await self.members.get(member_id, session)
        rolling = await self.purchases.rolling_paid(member_id, now_ms() - YEAR_MS, session)
        tier = tier_for(rolling, self.tiers)
        fields: dict[str, Any] = {"rolling_paid": rolling}
        if tier.name != member.get("tier"):
            fields["tier"] = tier.name
            await self.outbox.record(session, TierChanged(
                member_id=member_id, from_tier=member.get("tier") or self.tiers[0].name, to_tier=tier.name,
                rolling_paid=rolling, phone=member.get("phone"), locale=member.get("locale") or "zh-CN"),
                subject=member_id)
            self.mongo.after_commit(lambda: metrics.TIER_CHANGES.labels(tier.name).inc())
        await self.members.set_fields(member_id, fields, session)

    async def retier_all(self) -> int:
        """Re-rank members above the base tier: purchases age out of the rolling 12 months. Returns changes."""
        base = self.tiers[0].name
        candidates = await self.read(lambda: self.members.above_tier([t.name for t in self.tiers[1:]]))
        changed = 0
        for candidate in candidates:
            async def unit(session, member_id=candidate["_id"]):
                await self.retier(session, member_id)
                return (await self.members.get(member_id, session)).get("tier", base)

            if await self.mongo.transaction(unit) != candidate["tier"]:
                changed += 1
        return changed


class Analytics(UseCase):
    """What a member bought, and what a store's acquisition brought (fed by orders' events)."""

    async def member(self, member_id: str) -> dict[str, Any]:
        member = await self.find_member(member_id)
        stats = await self.read(lambda: self.members.stats_of(member["_id"])) or {}
        count, spend = stats.get("order_count", 0), stats.get("spend", 0)
        return {"member_id": member["_id"], "order_count": count, "spend": spend,
                "average_basket": member_rules.average_basket(spend, count),
                "last_purchase_at": rfc3339(stats.get("last_purchase_ms")) if stats.get("last_purchase_ms") else None,
                "top_categories": member_rules.top_categories(stats.get("categories") or {}),
                "tier": member.get("tier"), "rolling_paid": member.get("rolling_paid", 0),
                "dormant": bool(member.get("dormant"))}

    async def store(self, store_id: str) -> dict[str, Any]:
        async def read():
            query = {"bound_store_id": store_id, "status": "active"}
            return (await self.members.count(query), await self.members.count({**query, "dormant": True}),
                    await self.members.count({**query, "order_count": {"$gte": 1}}),
                    await self.members.count({**query, "order_count": {"$gte": 2}}))

        acquired, dormant, buyers, repeaters = await self.read(read)
        return {"store_id": store_id, "members_acquired": acquired, "active": acquired - dormant, "dormant": dormant,
                "buyers": buyers, "repeat_buyers": repeaters,
                "repeat_purchase_rate": member_rules.repeat_purchase_rate(buyers, repeaters)}


class Purchases(UseCase):
    """What orders' events do: earn on completion, claw back on refund, give a cancelled order's benefits back.

    Consumers call these inside the inbox's unit of work; each method's own unit of work joins it.
    """

    def __init__(self, *args, points: Points, tiers: Tiers, checkout: CheckoutHolds) -> None:
        super().__init__(*args)
        self.points, self.tiers_flow, self.checkout = points, tiers, checkout

    async def completed(self, data: dict[str, Any], occurred_ms: int) -> None:
        """Earn points, count the purchase for tiers and analytics, reactivate a dormant member."""
        await self.mongo.transaction(lambda session: self._completed(session, data, occurred_ms))

    async def refunded(self, data: dict[str, Any]) -> None:
        """Claw back earned points and give back spent points, in proportion; coupons back on a full refund."""
        await self.mongo.transaction(lambda session: self._refunded(session, data))

    async def _completed(self, session, data: dict[str, Any], occurred_ms: int) -> None:
        """Earn points, count the purchase for tiers and analytics, reactivate a dormant member."""
        order_id, member_id = data.get("order_id"), data.get("member_id")
        if not member_id or not order_id:
            return
        existing = await self.purchases.get(order_id, session)
        if existing is not None and existing.get("amount") is not None:
            return  # already counted
        member = await self.members.get_live(member_id, session)
        if member is None:
            return
        hold = await self.holds.get(order_id, session)
        if hold is not None and hold["state"] == "held":
            await self.checkout.commit(order_id)  # safety net: a completed order was paid
        paid = _paid_amount(data)
        multiplier = multiplier_of(member.get("tier", self.tiers[0].name), self.tiers)
        earned = points_rules.earned_points(paid, multiplier, self.points_policy)
        purchase = {"_id": order_id, "member_id": member["_id"], "amount": paid, "refunded": 0, "earned": earned,
                    "clawed_back": 0, "at_ms": occurred_ms}
        if existing is None:
            await self.purchases.add(purchase, session)
        else:
            await self.purchases.replace(purchase, session)
        if earned:
            member["points_balance"] = await self.points.post(session, member, earned, points_rules.EARN,
                                                              order_id=order_id, at_ms=occurred_ms)
        if existing is not None and existing.get("pending_refund"):
            # The refund overtook the completion on the bus: apply it now that there is something to undo.
            await self._claw_back(session, member, purchase, existing["pending_refund"])
        order_count = await self._update_stats(session, member["_id"], data, paid, occurred_ms)
        # order_count is kept on the member too, so store analytics can count buyers with a plain filter.
        await self.members.set_fields(member["_id"], {"last_activity_ms": max(member.get("last_activity_ms", 0),
                                                                              occurred_ms), "dormant": False,
                                                      "order_count": order_count}, session)
        await self.tiers_flow.retier(session, member["_id"])

    async def _refunded(self, session, data: dict[str, Any]) -> None:
        """Claw back earned points and give back spent points, in proportion; coupons back on a full refund."""
        order_id = data.get("order_id")
        if not order_id:
            return
        purchase = await self.purchases.get(order_id, session)
        hold = await self.holds.get(order_id, session)
        member_id = (purchase or {}).get("member_id") or (hold or {}).get("member_id") or data.get("member_id")
        member = await self.members.get_live(member_id, session) if member_id else None
        if member is None:
            return
        completed = purchase is not None and purchase.get("amount") is not None
        paid = purchase["amount"] if completed else _paid_amount(data)
        before = purchase.get("refunded", 0) if completed else (purchase or {}).get("pending_refund", 0)
        refunded = min(paid, before + _refund_amount(data, paid)) if paid > 0 else before + _refund_amount(data, paid)
        if completed:
            await self._claw_back(session, member, purchase, refunded)
        elif purchase is None:
            await self.purchases.add({"_id": order_id, "member_id": member["_id"], "amount": None,
                                      "pending_refund": refunded, "at_ms": now_ms()}, session)
        else:
            await self.purchases.set_fields(order_id, {"pending_refund": refunded}, session)
        if hold is not None:
            full = paid <= 0 or refunded >= paid
            await self._give_back_spent(session, hold, paid, refunded, full)
        await self.tiers_flow.retier(session, member["_id"])

    async def _claw_back(self, session, member: dict, purchase: dict, refunded: int) -> None:
        """Take the refunded share of the earned points back in full: from the balance, then from what unpaid
        orders hold, and the rest as a debt (a negative balance later credits pay off first). Capping at the
        balance let a member park the points in a hold, have the purchase refunded and keep them."""
        claw = points_rules.clawback(purchase["earned"], purchase["amount"], refunded, purchase.get("clawed_back", 0))
        if claw:
            balance = (await self.members.get(member["_id"], session)).get("points_balance", 0)
            sources = points_rules.clawback_sources(claw, balance, await self.holds.points_held(member["_id"], session))
            await self.points.post(session, member, -claw, points_rules.CLAWBACK, order_id=purchase["_id"],
                                   note=sources.describe())

            def count() -> None:
                metrics.CLAWBACK_UNCOVERED.labels("holds").inc(sources.from_holds)
                metrics.CLAWBACK_UNCOVERED.labels("debt").inc(sources.debt)

            self.mongo.after_commit(count)
        await self.purchases.set_fields(purchase["_id"], {"refunded": refunded,
                                                          "clawed_back": purchase.get("clawed_back", 0) + claw},
                                        session)

    async def _give_back_spent(self, session, hold: dict, paid: int, refunded: int, full: bool) -> None:
        if hold["state"] == "held":
            await self.checkout.release(hold["_id"])
            return
        if hold["state"] != "committed":
            return  # released or refunded already
        back = hold["points_used"] - hold.get("points_returned", 0) if full else \
            points_rules.spent_points_to_return(hold["points_used"], paid, refunded, hold.get("points_returned", 0))
        if back > 0:
            member = await self.members.get_live(hold["member_id"], session)
            await self.points.post(session, member, back, points_rules.REFUND, order_id=hold["_id"])
        fields = {"points_returned": hold.get("points_returned", 0) + back}
        if full:
            for code in hold["coupon_codes"]:
                if await self.coupons.move_state(code, coupon_rules.REDEEMED, {"state": coupon_rules.ISSUED,
                                                                               "order_id": None}, session):
                    self.mongo.after_commit(lambda: metrics.COUPONS.labels("returned").inc())
            fields["state"] = "refunded"
        await self.holds.set_fields(hold["_id"], fields, session)

    async def cancelled(self, data: dict[str, Any]) -> None:
        """Safety net: a cancelled order, or a checkout rejected before the order was placed, gives its coupons
        and points back (if orders did not already). With no hold yet, the release leaves its tombstone, so a
        hold of that order arriving later is refused.

        The release opens its own unit of work, which joins the consumer's."""
        if data.get("order_id"):
            await self.checkout.release(data["order_id"])

    async def _update_stats(self, session, member_id: str, data: dict, paid: int, at_ms: int) -> int:
        stats = await self.members.stats_of(member_id, session) or {"_id": member_id, "order_count": 0, "spend": 0,
                                                                     "categories": {}, "last_purchase_ms": 0,
                                                                     "stores": {}}
        stats["order_count"] += 1
        stats["spend"] += paid
        stats["last_purchase_ms"] = max(stats.get("last_purchase_ms", 0), at_ms)
        categories = dict(stats.get("categories") or {})
        for line in data.get("lines") or []:
            if line.get("category"):
                categories[line["category"]] = categories.get(line["category"], 0) + int(line.get("qty", 0))
        stats["categories"] = categories
        await self.members.put_stats(stats, session)
        return stats["order_count"]


def _paid_amount(data: dict[str, Any]) -> int:
    payment = data.get("payment") or {}
    if isinstance(payment.get("amount"), int):
        return payment["amount"]
    return int((data.get("totals") or {}).get("total", 0))


def _refund_amount(data: dict[str, Any], paid: int) -> int:
    """The amount of this refund; an event without one is a full refund."""
    refund = data.get("refund") or {}
    for value in (refund.get("amount"), data.get("refund_amount"), data.get("amount")):
        if isinstance(value, int):
            return value
    return paid


POINTS = web.AppKey("points", Points)
TIERS = web.AppKey("tiers", Tiers)
ANALYTICS = web.AppKey("analytics", Analytics)
PURCHASES = web.AppKey("purchases", Purchases)
__all__ = ["ANALYTICS", "POINTS", "PURCHASES", "TIERS", "Analytics", "Points", "Purchases", "Tiers"]
