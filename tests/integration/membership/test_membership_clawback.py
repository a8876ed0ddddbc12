"""The claw-back of a refunded purchase's points cannot be dodged by parking them in an unpaid order's hold:
they are clawed back from the hold (its release pays the debt instead of the member), and what was spent for
good is carried as a debt (a negative balance) that later earnings pay off first.

The attack as a member would run it: earn, hold the points on an unpaid order, have the purchase that earned
them refunded, cancel the unpaid order, and repeat. Orders' events arrive over the real broker."""
from __future__ import annotations

import uuid

from tests.integration.membership.conftest import bearer, publish, unique_phone
from tests.integration.membership.test_membership_order_events import completed
from tests.support import eventually

BIG_BASKET = [{"sku_id": "sku_tee_classic_whi_s", "category": "tees", "qty": 4, "unit_price": 50_000}]


def order_id() -> str:
    return f"ord_{uuid.uuid4().hex[:16]}"


class Member:
    def __init__(self, membership, token: str, member_id: str, service: str, namespace: str) -> None:
        self.membership, self.token, self.member_id, self.service = membership, token, member_id, service
        self.namespace = namespace

    @classmethod
    async def create(cls, membership, namespace: str) -> Member:
        token, member_id = await membership.member_login(unique_phone())
        return cls(membership, token, member_id, await membership.service_token(), namespace)

    async def entries(self, oid: str) -> list[dict]:
        entries = await self.membership.repos.ledger.entries(self.member_id)
        return [e for e in entries if e.get("order_id") == oid]

    async def wait_for(self, oid: str, kind: str) -> dict:
        async def entry():
            return next((e for e in await self.entries(oid) if e["kind"] == kind), None)
        return await eventually(entry)

    async def buy(self, total: int) -> tuple[str, int]:
        """A completed order of `total` fen; returns its id and the points it earned."""
        oid = order_id()
        await publish(self.namespace, "orders.order.completed", completed(oid, self.member_id, total))
        return oid, (await self.wait_for(oid, "earn"))["amount"]

    async def refund(self, oid: str, amount: int) -> dict:
        await publish(self.namespace, "orders.order.refunded", {"order_id": oid, "member_id": self.member_id,
                                                                "refund": {"amount": amount}})
        return await self.wait_for(oid, "clawback")

    async def hold(self, oid: str, points: int):
        return await self.membership.api.post("/members/internal/checkout-holds", {
            "order_id": oid, "member_id": self.member_id, "channel": "app", "points": points,
            "lines": BIG_BASKET}, headers=bearer(self.service))

    async def step(self, oid: str, step: str) -> None:
        status, body = await self.membership.api.post(f"/members/internal/checkout-holds/{oid}/{step}",
                                                      headers=bearer(self.service))
        assert status == 200, body

    async def points(self) -> dict:
        """The member's own points view, checked against the ledger (balance = ledger sum, debt its negative)."""
        status, view = await self.membership.api.get("/members/me/points", headers=bearer(self.token))
        assert status == 200, view
        assert view["balance"] == await self.membership.repos.ledger.sum_for(self.member_id)
        assert view["debt"] == max(0, -view["balance"])
        return view


async def test_points_parked_in_an_unpaid_hold_are_clawed_back_when_their_purchase_is_refunded(
        membership, bus_namespace):
    member = await Member.create(membership, bus_namespace)
    for round_ in range(2):  # the attack repeated: it yields nothing, neither time
        purchase, earned = await member.buy(150_000)
        assert earned >= 1500 and (await member.points())["balance"] == earned
        unpaid = order_id()
        status, held = await member.hold(unpaid, earned)  # every earned point parked in an unpaid order
        assert status == 201 and held["points_used"] == earned, held
        assert (await member.points())["balance"] == 0

        clawback = await member.refund(purchase, 150_000)
        assert clawback["amount"] == -earned  # clawed back in full, not capped at the (empty) balance
        assert clawback["note"] == f"0 from the balance, {earned} from held orders, 0 as debt"
        view = await member.points()
        assert view["balance"] == -earned and view["debt"] == earned  # owed until the hold lets go

        status, problem = await member.hold(order_id(), 100)  # nothing can be spent while in debt
        assert status == 409 and problem["type"].endswith("insufficient-points"), problem

        await member.step(unpaid, "release")  # the unpaid order is cancelled: the held points pay the debt
        view = await member.points()
        assert view["balance"] == 0 and view["debt"] == 0, (round_, view)


async def test_points_already_spent_on_a_paid_order_are_carried_as_a_debt_later_earnings_pay_off_first(
        membership, bus_namespace):
    member = await Member.create(membership, bus_namespace)
    purchase, earned = await member.buy(100_000)
    spent_on = order_id()
    assert (await member.hold(spent_on, earned - 200)).status == 201
    await member.step(spent_on, "commit")  # paid: those points are spent for good
    kept = order_id()
    assert (await member.hold(kept, 100)).status == 201  # 100 more parked in an unpaid order
    assert (await member.points())["balance"] == 100

    clawback = await member.refund(purchase, 100_000)
    assert clawback["amount"] == -earned
    assert clawback["note"] == f"100 from the balance, 100 from held orders, {earned - 200} as debt"
    assert (await member.points())["debt"] == earned - 100
    await member.step(kept, "release")
    assert (await member.points())["debt"] == earned - 200  # the held 100 went to the debt, not the member

    # The next purchases pay the debt off before anything becomes spendable again.
    _, first = await member.buy(50_000)
    assert 0 < first < earned - 200
    view = await member.points()
    assert view["balance"] == first - (earned - 200) < 0
    _, second = await member.buy(150_000)
    view = await member.points()
    assert view["debt"] == 0 and view["balance"] == first + second - (earned - 200) > 0
    status, body = await member.hold(order_id(), view["balance"])
    assert status == 201 and body["points_used"] == view["balance"]


async def test_a_partial_refund_claws_back_its_share_from_the_hold_too(membership, bus_namespace):
    member = await Member.create(membership, bus_namespace)
    purchase, earned = await member.buy(200_000)
    unpaid = order_id()
    assert (await member.hold(unpaid, earned)).status == 201
    clawback = await member.refund(purchase, 100_000)  # half the purchase comes back
    assert clawback["amount"] == -(earned // 2)
    await member.step(unpaid, "release")
    view = await member.points()
    assert view["balance"] == earned - earned // 2 and view["debt"] == 0
    assert [e["kind"] for e in await member.entries(purchase)] == ["earn", "clawback"]
