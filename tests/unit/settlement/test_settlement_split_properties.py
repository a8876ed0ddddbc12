"""For random orders and rule sets, every posting balances and the shares add up to the net."""
from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings, strategies as st

from services.settlement.domain import accounts
from services.settlement.domain.journal import (capture_entries, check_balanced, refund_entries, sale_entries,
                                                unearned_refund_entries)
from services.settlement.domain.orders import LocationInfo, parse_order
from services.settlement.domain.rules import FulfilmentFee, SplitRule
from services.settlement.domain.splits import reverse_lines, split_sale

LOCATIONS = {
    "loc_direct": LocationInfo("loc_direct", "store", "direct", None),
    "loc_franchise": LocationInfo("loc_franchise", "store", "franchise", "frn_1"),
    "loc_other_franchise": LocationInfo("loc_other_franchise", "store", "franchise", "frn_2"),
    "loc_warehouse": LocationInfo("loc_warehouse", "warehouse", "direct", None),
}
fees = st.one_of(st.builds(FulfilmentFee, kind=st.just("percent"), bps=st.integers(0, 10_000)),
                 st.builds(FulfilmentFee, kind=st.just("fixed"), amount=st.integers(0, 20_000)))
rules = st.builds(
    SplitRule, version=st.integers(1, 50), effective_from=st.just(datetime(2020, 1, 1, tzinfo=UTC)),
    ship_from_store_fee=fees, pickup_handling_fee=fees, in_store_fee=fees,
    staff_commission_bps=st.integers(0, 10_000), franchise_wholesale_markup_bps=st.integers(0, 100_000),
    channel_fee_bps=st.dictionaries(st.sampled_from(["app", "mini_program", "marketplace", "store"]),
                                    st.integers(0, 10_000)),
    payment_fee_bps=st.dictionaries(st.sampled_from(["default", "wechat", "alipay"]), st.integers(0, 10_000)))


@st.composite
def orders(draw):
    lines = []
    for index in range(draw(st.integers(1, 5))):
        qty = draw(st.integers(1, 6))
        unit_price = draw(st.integers(0, 60_000))
        gross = qty * unit_price
        discount = draw(st.integers(0, gross))
        points = draw(st.integers(0, gross - discount))
        lines.append({"sku_id": f"sku_{draw(st.integers(0, 3))}", "qty": qty, "unit_price": unit_price,
                      "cost_price": draw(st.integers(0, 80_000)), "discount": discount, "points_discount": points,
                      "line_total": gross - discount - points})
    line_net = sum(line["line_total"] for line in lines)
    # Sometimes an order-level reduction the lines do not show (or an extra charge): the total rules.
    total = draw(st.one_of(st.just(line_net), st.integers(0, line_net + 5_000)))
    location_id = draw(st.sampled_from([None, *LOCATIONS]))
    data = {"order_id": "ord_p", "channel": draw(st.sampled_from(["app", "mini_program", "marketplace", "store"])),
            "fulfilment": {"type": draw(st.sampled_from(["ship", "pickup", "in_store"])), "location_id": location_id},
            "lines": lines, "totals": {"total": total},
            "attribution": {"staff_id": draw(st.sampled_from([None, "stf_1"]))},
            "payment": {"provider": draw(st.sampled_from(["wechat", "alipay", "card"])), "payment_id": "pay_p",
                        "amount": total, "fee": draw(st.one_of(st.none(), st.integers(0, total)))}}
    if draw(st.booleans()):  # split over two locations by stock
        first, second = draw(st.permutations(list(LOCATIONS)))[:2]
        data["allocations"] = [
            {"location_id": first, "lines": [{"sku_id": line["sku_id"], "qty": line["qty"] // 2} for line in lines]},
            {"location_id": second, "lines": [{"sku_id": line["sku_id"], "qty": line["qty"] - line["qty"] // 2}
                                              for line in lines]}]
    return data


@settings(max_examples=200, deadline=None)
@given(data=orders(), rule=rules)
def test_every_posting_balances_and_shares_add_up_to_the_net(data, rule):
    order = parse_order(data, LOCATIONS)
    split = split_sale(order, rule)
    assert sum(line.net for line in order.lines) == data["totals"]["total"]
    assert sum(split.by_account().values()) == data["totals"]["total"]
    for line in split.lines:
        assert sum(amount for _, amount in line.shares) == line.net
    for entries in (capture_entries(order.payment.amount), sale_entries(split),
                    unearned_refund_entries(order.net_total)):
        check_balanced(entries)
    # Nothing but the parties of the order gets a share.
    allowed = {accounts.HQ, accounts.channel(order.channel), accounts.provider(order.payment.provider),
               accounts.staff("stf_1"), accounts.franchisee("frn_1"), accounts.franchisee("frn_2"),
               accounts.store("loc_direct")}
    assert set(split.by_account()) <= allowed


@settings(max_examples=200, deadline=None)
@given(data=orders(), rule=rules, chunks=st.lists(st.integers(1, 4), min_size=1, max_size=12),
       refund_noise=st.integers(-300, 300))
def test_returns_in_any_parts_reverse_exactly_the_returned_share(data, rule, chunks, refund_noise):
    """Units come back in random parts: each refund posting balances (whatever the refunded amount), and once
    everything is back the reversals add up to the sale's shares to the fen."""
    split = split_sale(parse_order(data, LOCATIONS), rule)
    units = [(line.sku_id, 1) for line in split.lines for _ in range(line.qty)]
    reversed_total: dict[str, int] = {}
    refunded: dict[int, int] = {}
    position = 0
    for size in chunks + [len(units)]:  # the last part returns whatever is left
        batch = units[position:position + size]
        position += len(batch)
        if not batch:
            break
        reversal = reverse_lines(split, refunded, batch)
        assert not reversal.unmatched
        refund_amount = max(0, sum(reversal.by_account.values()) + refund_noise)
        check_balanced(refund_entries(reversal, refund_amount))
        for index, count in reversal.units_by_line.items():
            refunded[index] = refunded.get(index, 0) + count
        for account, amount in reversal.by_account.items():
            reversed_total[account] = reversed_total.get(account, 0) + amount
    assert {k: v for k, v in reversed_total.items() if v} == {k: v for k, v in split.by_account().items() if v}
    # Nothing more can be returned.
    assert reverse_lines(split, refunded, None).by_account == {}
