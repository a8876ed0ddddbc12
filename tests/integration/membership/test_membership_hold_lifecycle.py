"""Checkout holds that meet their release in every order: a release before the hold (the late hold is refused
and takes nothing), a commit after a release (409 hold-released, nothing spent), a release racing a pending
commit (both answers final, orders' follow-up stops retrying), holds that expire (the sweep gives back what an
uncommitted hold took, a committed one stays), and orders' rejected event releasing like a cancellation.

Real membership on the real broker and nx; expiry is driven by calling the sweep's use case with a later
"now", never by waiting."""
from __future__ import annotations

import asyncio
import uuid

from libs.clients import UpstreamError
from libs.clock import now_ms
from services.membership.usecases import CHECKOUT_HOLDS
from services.orders.domain import saga
from services.orders.settings import OrdersSettings
from services.orders.upstream import Upstreams
from services.orders.usecases.followups import overtaken
from tests.integration.membership.conftest import bearer, publish, unique_phone
from tests.support import eventually, settings_for

LINES = [{"sku_id": "sku_tee_classic_whi_s", "category": "tees", "qty": 2, "unit_price": 25_000}]
GRANT = 1000
HOLDS = "/members/internal/checkout-holds"


def order_id() -> str:
    return f"ord_{uuid.uuid4().hex[:16]}"


class Shopper:
    """A member with the welcome coupon and GRANT points, and the service token orders would use."""

    def __init__(self, membership, member_id: str, coupon: str, service: str) -> None:
        self.membership, self.member_id, self.coupon, self.service = membership, member_id, coupon, service

    @classmethod
    async def create(cls, membership) -> Shopper:
        token, member_id = await membership.member_login(unique_phone())
        _, scanned = await membership.api.post("/members/scan", {"code": "qr_campaign_welcome"},
                                               headers=bearer(token))
        admin = await membership.staff_token("hq.admin", "hq-admin-pass")
        status, _ = await membership.api.post(f"/members/{member_id}/points/adjustments",
                                              {"delta": GRANT, "note": "test grant"}, headers=bearer(admin))
        assert status == 201
        return cls(membership, member_id, scanned["coupons_issued"][0]["code"], await membership.service_token())

    async def hold(self, oid: str, points: int = 300, coupons: bool = True, **extra):
        return await self.membership.api.post(HOLDS, {
            "order_id": oid, "member_id": self.member_id, "channel": "app", "points": points,
            "coupon_codes": [self.coupon] if coupons else [], "lines": LINES, **extra}, headers=bearer(self.service))

    async def step(self, oid: str, step: str):
        return await self.membership.api.post(f"{HOLDS}/{oid}/{step}", headers=bearer(self.service))

    async def coupon_state(self) -> str:
        repos = self.membership.repos
        return (await repos.mongo.read_committed(lambda: repos.coupons.get(self.coupon)))["state"]

    async def balance(self) -> int:
        repos = self.membership.repos
        member = await repos.mongo.read_committed(lambda: repos.members.get(self.member_id))
        assert member["points_balance"] == await repos.ledger.sum_for(self.member_id)
        return member["points_balance"]

    async def stored_hold(self, oid: str) -> dict | None:
        repos = self.membership.repos
        return await repos.mongo.read_committed(lambda: repos.holds.get(oid))

    async def entries_of(self, oid: str) -> list[tuple[str, int]]:
        entries = await self.membership.repos.ledger.entries(self.member_id)
        return [(e["kind"], e["amount"]) for e in entries if e.get("order_id") == oid]


def refused_as_released(reply) -> bool:
    status, body = reply
    return status == 409 and body["type"].endswith("/hold-released") and body["order_id"] is not None


async def test_a_release_before_the_hold_refuses_the_late_hold_and_nothing_is_taken(membership):
    shopper = await Shopper.create(membership)
    oid = order_id()
    status, released = await shopper.step(oid, "release")  # orders gave up before its hold call landed
    assert status == 200 and released == {"order_id": oid, "state": "released", "coupon_codes": [],
                                           "points_returned": 0}

    late = await shopper.hold(oid)
    assert refused_as_released(late), late.body
    assert refused_as_released(await shopper.hold(oid))  # retried: the same refusal, still nothing taken
    assert await shopper.coupon_state() == "issued"
    assert await shopper.balance() == GRANT and await shopper.entries_of(oid) == []
    assert refused_as_released(await shopper.step(oid, "commit"))  # a tombstone is never committed
    assert (await shopper.step(oid, "release")).status == 200     # and releasing again stays a no-op

    # The coupon and the points are free for the member's next order.
    status, body = await shopper.hold(order_id())
    assert status == 201 and body["coupon_discount"] == 2000 and body["points_used"] == 300


async def test_a_commit_after_the_release_is_hold_released_and_nothing_is_spent(membership):
    shopper = await Shopper.create(membership)
    oid = order_id()
    status, held = await shopper.hold(oid)
    assert status == 201 and held["points_used"] == 300 and held["expires_at"]
    assert await shopper.coupon_state() == "locked" and await shopper.balance() == GRANT - 300
    assert (await shopper.step(oid, "release")).status == 200

    assert refused_as_released(await shopper.step(oid, "commit"))
    assert await shopper.coupon_state() == "issued"
    assert await shopper.balance() == GRANT
    assert sorted(await shopper.entries_of(oid)) == [("hold", -300), ("release", 300)]
    assert refused_as_released(await shopper.hold(oid))  # nor can the order hold again


async def test_a_release_racing_a_pending_commit_resolves_and_orders_stops_retrying(membership, mongo_url,
                                                                                   bus_namespace):
    """Orders' commit (a follow-up after payment) and its release (the order cancelled meanwhile) cross. Either
    may land first; both answers are final (200 or 409 hold-released, never a 5xx to retry), the benefits end
    up given back, and the answer orders gets for a retried commit is one its follow-up treats as done."""
    shopper = await Shopper.create(membership)
    for _ in range(5):
        oid = order_id()
        assert (await shopper.hold(oid)).status == 201
        commit, release = await asyncio.gather(shopper.step(oid, "commit"), shopper.step(oid, "release"))
        assert release.status == 200, release.body
        assert commit.status == 200 or refused_as_released(commit), commit.body
        assert (await shopper.stored_hold(oid))["state"] == "released"
        assert await shopper.coupon_state() == "issued" and await shopper.balance() == GRANT
        assert refused_as_released(await shopper.step(oid, "commit"))

    # The same answer through orders' own client: its follow-up drops the commit instead of retrying forever.
    upstreams = Upstreams(settings_for(OrdersSettings, mongo_url, bus_namespace, membership_url=membership.api.base,
                                       client_secret=membership.settings.orders_client_secret))
    await upstreams.start()
    try:
        try:
            await upstreams.hold_action(oid, "commit")
            raise AssertionError("a commit after the release must be refused")
        except UpstreamError as refusal:
            assert overtaken(saga.BENEFITS_COMMIT, refusal), refusal.body
        await upstreams.hold_action(oid, "release")  # idempotent
    finally:
        await upstreams.close()


async def test_an_expired_uncommitted_hold_is_released_by_the_sweep_and_a_committed_one_is_kept(membership):
    shopper = await Shopper.create(membership)
    abandoned, paid, recent = order_id(), order_id(), order_id()
    status, held = await shopper.hold(abandoned, ttl_s=60)
    assert status == 201
    assert (await shopper.stored_hold(abandoned))["expires_at_ms"] - now_ms() <= 60_000
    status, body = await shopper.hold(paid, points=200, coupons=False, ttl_s=60)
    assert status == 201 and body["points_used"] == 200
    assert (await shopper.step(paid, "commit")).status == 200
    assert (await shopper.hold(recent, points=100, coupons=False)).status == 201  # default ttl (settings)
    assert await shopper.balance() == GRANT - 600

    holds = membership[CHECKOUT_HOLDS]
    assert await holds.expire(now=now_ms() - 1000) == 0  # nothing is due yet
    in_two_minutes = now_ms() + 120_000
    assert in_two_minutes < (await shopper.stored_hold(recent))["expires_at_ms"]
    assert await holds.expire(now=in_two_minutes) == 1

    swept = await shopper.stored_hold(abandoned)
    assert swept["state"] == "released" and swept["release_reason"] == "expired"
    assert await shopper.coupon_state() == "issued"
    assert await shopper.balance() == GRANT - 300  # the abandoned 300 are back; 200 spent, 100 still held
    assert (await shopper.stored_hold(paid))["state"] == "committed"
    assert (await shopper.stored_hold(recent))["state"] == "held"
    assert await holds.expire(now=in_two_minutes) == 0  # idempotent: nothing given back twice
    assert await shopper.balance() == GRANT - 300

    # A payment that comes after the hold expired cannot commit it: orders hears hold-released.
    assert refused_as_released(await shopper.step(abandoned, "commit"))
    assert await shopper.coupon_state() == "issued"

    # The default ttl is a setting: far enough ahead, the recent hold lets go too.
    default_ms = membership.settings.hold_ttl_s * 1000
    assert await holds.expire(now=now_ms() + default_ms + 1000) == 1
    assert await shopper.balance() == GRANT - 200


async def test_a_hold_ttl_out_of_bounds_is_refused_and_takes_nothing(membership):
    shopper = await Shopper.create(membership)
    for ttl in (0, -5, membership.settings.hold_max_ttl_s + 1):
        status, problem = await shopper.hold(order_id(), ttl_s=ttl)
        assert status == 422, problem
    assert await shopper.coupon_state() == "issued" and await shopper.balance() == GRANT


async def test_orders_rejected_event_releases_the_hold_once_and_refuses_a_later_hold(membership, bus_namespace):
    shopper = await Shopper.create(membership)
    held, never_held = order_id(), order_id()
    assert (await shopper.hold(held)).status == 201

    def rejected(oid: str) -> dict:
        return {"order_id": oid, "member_id": shopper.member_id, "channel": "app", "reason": "checkout interrupted",
                "fulfilment": {"type": "ship", "location_id": "loc_sh_jingan", "ownership": "direct",
                               "franchisee_id": None}}

    first = await publish(bus_namespace, "orders.order.rejected", rejected(held))
    await publish(bus_namespace, "orders.order.rejected", rejected(held), envelope_id=first["id"])  # redelivered
    await publish(bus_namespace, "orders.order.rejected", rejected(never_held))

    async def both_released() -> bool:
        holds = [await shopper.stored_hold(oid) for oid in (held, never_held)]
        return all(h is not None and h["state"] == "released" for h in holds)

    await eventually(both_released)

    async def inbox_has(event_id: str) -> bool:
        return await membership.repos.mongo.db["inbox"].count_documents({"_id": event_id}) == 1

    await eventually(lambda: inbox_has(first["id"]))
    assert await shopper.coupon_state() == "issued" and await shopper.balance() == GRANT
    assert sorted(await shopper.entries_of(held)) == [("hold", -300), ("release", 300)]  # given back once
    # The rejected checkout's hold call, arriving late, takes nothing.
    assert refused_as_released(await shopper.hold(never_held))
    assert await shopper.coupon_state() == "issued" and await shopper.balance() == GRANT

