"""Settlement's pure core: rounding, rules, order parsing, periods, statements, payouts, reconciliation."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import pytest

from services.settlement.domain import accounts
from services.settlement.domain.journal import Entry, UnbalancedPosting, check_balanced, payout_entries
from services.settlement.domain.money import allocate, round_half_up, round_to_total
from services.settlement.domain.orders import InvalidOrderEvent, LocationInfo, parse_order, parse_refund
from services.settlement.domain.payouts import PayoutError, check_transition, payable_amount
from services.settlement.domain.periods import (PeriodError, due_for_closing, parse_statement_id, period_of,
                                               statement_id)
from services.settlement.domain.reconciliation import (CapturedPayment, ReconciliationFileError,
                                                       parse_provider_csv, reconcile)
from services.settlement.domain.rules import (DEFAULT_RULE, FulfilmentFee, RuleError, SplitRule, next_version,
                                              rule_in_force)
from services.settlement.domain.splits import split_sale
from services.settlement.domain.statements import StatementLine, build_statement, can_read, to_csv


# -- rounding ------------------------------------------------------------------------------------
def test_largest_remainder_gives_the_leftover_fen_to_the_largest_fractions():
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]  # ties: the earlier share
    assert allocate(190, [19800, 11900]) == [119, 71]  # 118.68 / 71.32
    assert allocate(10, [0, 0]) == [5, 5]
    assert allocate(0, []) == []
    assert round_to_total([Fraction(-1, 3), Fraction(4, 3)], 1) == [0, 1]


def test_allocation_refuses_what_cannot_be_allocated():
    with pytest.raises(ValueError):
        allocate(5, [])
    with pytest.raises(ValueError):
        allocate(5, [1, -1])
    with pytest.raises(ValueError):
        round_to_total([Fraction(1, 2)], 3)


def test_a_single_fee_rounds_half_up():
    assert round_half_up(Fraction(1902, 10)) == 190
    assert round_half_up(Fraction(1, 2)) == 1


# -- rules ---------------------------------------------------------------------------------------
def test_the_rule_in_force_is_the_latest_effective_one():
    v2 = SplitRule(version=2, effective_from=datetime(2026, 6, 1, tzinfo=UTC), staff_commission_bps=500)
    v3 = SplitRule(version=3, effective_from=datetime(2027, 1, 1, tzinfo=UTC))
    rules = [DEFAULT_RULE, v2, v3]
    assert rule_in_force(rules, datetime(2026, 5, 31, 23, 59, tzinfo=UTC)).version == 1
    assert rule_in_force(rules, datetime(2026, 6, 1, tzinfo=UTC)).version == 2
    assert rule_in_force(rules, datetime(2027, 3, 1, tzinfo=UTC)).version == 3
    with pytest.raises(RuleError):
        rule_in_force(rules, datetime(1999, 1, 1, tzinfo=UTC))


def test_rules_reject_impossible_rates_and_round_trip_through_documents():
    with pytest.raises(RuleError):
        SplitRule(version=2, effective_from=datetime(2026, 1, 1, tzinfo=UTC), staff_commission_bps=10_001)
    with pytest.raises(RuleError):
        SplitRule(version=2, effective_from=datetime(2026, 1, 1))  # naive time
    with pytest.raises(RuleError):
        FulfilmentFee("bonus")
    assert SplitRule.from_dict(DEFAULT_RULE.to_dict()) == DEFAULT_RULE


def test_a_new_version_keeps_what_it_does_not_change():
    v2 = next_version(DEFAULT_RULE, {"effective_from": datetime(2027, 1, 1, tzinfo=UTC), "staff_commission_bps": 450,
                                     "pickup_handling_fee": {"kind": "percent", "bps": 200, "amount": 0}})
    assert (v2.version, v2.staff_commission_bps, v2.pickup_handling_fee) == (2, 450, FulfilmentFee("percent", 200))
    assert (v2.ship_from_store_fee, v2.channel_fee_bps) == (DEFAULT_RULE.ship_from_store_fee,
                                                            DEFAULT_RULE.channel_fee_bps)
    assert next_version(None, {"effective_from": datetime(2027, 1, 1, tzinfo=UTC)}).version == 1
    with pytest.raises(RuleError):
        next_version(v2, {"effective_from": datetime(2027, 1, 1, tzinfo=UTC), "payment_fee_bps": {"x": -1}})


# -- order events --------------------------------------------------------------------------------
ORDER = {"order_id": "ord_1", "channel": "store", "fulfilment": {"type": "in_store", "location_id": "loc_f"},
         "lines": [{"sku_id": "sku_a", "qty": 1, "unit_price": 10_000, "cost_price": 5_000, "discount": 0,
                    "line_total": 10_000}],
         "totals": {"total": 10_000}, "attribution": {"staff_id": "stf_1"},
         "payment": {"provider": "alipay", "payment_id": "pay_1", "amount": 10_000, "fee": 60}}


def test_ownership_missing_from_the_event_comes_from_the_local_copy_of_locations():
    order = parse_order(ORDER, {"loc_f": LocationInfo("loc_f", "store", "franchise", "frn_9")})
    assert order.location == LocationInfo("loc_f", "store", "franchise", "frn_9")
    shares = split_sale(order, DEFAULT_RULE).by_account()
    # 10000 - wholesale 5500 = 4500 to the franchisee; 3% to the assistant; fee 60; HQ the rest.
    assert shares == {"franchisee:frn_9": 4500, "staff:stf_1": 300, "provider:alipay": 60, "hq": 5140}


def test_a_warehouse_earns_no_fulfilment_fee_and_a_missing_fee_follows_the_rule():
    data = {**ORDER, "fulfilment": {"type": "ship", "location_id": "loc_wh"},
            "payment": {"provider": "wechat", "payment_id": "p", "amount": 10_000}}
    order = parse_order(data, {"loc_wh": LocationInfo("loc_wh", "warehouse", "direct", None)})
    shares = split_sale(order, DEFAULT_RULE).by_account()
    assert shares == {"provider:wechat": 60, "staff:stf_1": 300, "hq": 9640}


def test_a_fixed_pickup_fee_is_per_order_and_spread_over_the_lines():
    data = {**ORDER, "fulfilment": {"type": "pickup", "location_id": "loc_d"}, "attribution": {},
            "lines": [ORDER["lines"][0], {**ORDER["lines"][0], "sku_id": "sku_b", "unit_price": 5_000,
                                          "line_total": 5_000}],
            "totals": {"total": 15_000}, "payment": {"provider": "alipay", "payment_id": "p", "amount": 15_000,
                                                     "fee": 0}}
    split = split_sale(parse_order(data, {}), DEFAULT_RULE)
    assert split.by_account() == {"store:loc_d": 500, "hq": 14_500}
    assert [dict(line.shares)["store:loc_d"] for line in split.lines] == [333, 167]


def test_a_line_without_unit_price_is_read_from_its_line_total_after_discounts():
    data = {**ORDER, "lines": [{"sku_id": "sku_a", "qty": 2, "line_total": 9000, "discount": 800,
                                "points_discount": 200, "cost_price": 1000}], "totals": {}, "payment": {}}
    order = parse_order(data)
    assert (order.lines[0].gross, order.lines[0].net, order.net_total) == (10_000, 9000, 9000)


@pytest.mark.parametrize("broken", [
    {"order_id": None}, {"lines": []}, {"lines": [{"sku_id": "a", "qty": 0, "unit_price": 1}]},
    {"lines": [{"sku_id": "a", "qty": 1, "unit_price": 1.5}]}, {"totals": {"total": -1}},
    {"payment": {"provider": "x", "amount": 10_000, "fee": -1}},
])
def test_unusable_order_events_are_refused(broken):
    with pytest.raises(InvalidOrderEvent):
        parse_order({**ORDER, **broken})


def test_refund_events_in_orders_shape_and_in_the_bare_shape():
    orders_shape = {**ORDER, "refund_id": "rfn_1", "refund_amount": 4000,
                    "return_lines": [{"sku_id": "sku_a", "qty": 1, "unit_price": 10_000, "refund": 4000}]}
    refund = parse_refund(orders_shape)
    assert (refund.refund_ref, refund.amount, [(l.sku_id, l.qty, l.amount) for l in refund.lines]) == \
        ("rfn_1", 4000, [("sku_a", 1, 4000)])
    cancellation = parse_refund({**ORDER, "refund_id": "rfn_2", "refund_amount": 10_000, "return_lines": []})
    assert cancellation.lines == ()  # everything
    bare = parse_refund({"order_id": "ord_1", "lines": [{"sku_id": "sku_a", "qty": 1, "amount": 700}]})
    assert bare.amount == 700 and bare.refund_ref is None
    with pytest.raises(InvalidOrderEvent):
        parse_refund({"order_id": "ord_1"})


# -- journal -------------------------------------------------------------------------------------
def test_unbalanced_postings_and_malformed_entries_are_refused():
    with pytest.raises(UnbalancedPosting):
        check_balanced([Entry("hq", debit=1), Entry("bank", credit=2)])
    with pytest.raises(ValueError):
        Entry("hq", debit=1, credit=1)
    entries = payout_entries({"store:loc_a": 100, "staff:stf_1": 0})
    assert entries == (Entry("store:loc_a", debit=100), Entry("bank", credit=100))


def test_account_names():
    assert accounts.is_valid("franchisee:frn_1") and accounts.is_valid("hq")
    assert not accounts.is_valid("bogus:x") and not accounts.is_valid("store:a.b") and not accounts.is_valid("x")


# -- periods and statements ----------------------------------------------------------------------
def test_periods_follow_the_local_calendar():
    day = period_of("day", date(2026, 11, 23), 480)
    assert (day.start, day.end) == (datetime(2026, 11, 22, 16, tzinfo=UTC), datetime(2026, 11, 23, 16, tzinfo=UTC))
    week = period_of("week", date(2026, 11, 26), 480)  # a Thursday
    assert week.label == date(2026, 11, 23) and (week.end - week.start).days == 7
    month = period_of("month", date(2026, 12, 31), 0)
    assert (month.start, month.end) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    with pytest.raises(PeriodError):
        period_of("year", date(2026, 1, 1), 0)


def test_the_last_ended_periods_are_due_for_closing_after_the_grace():
    # Wednesday 2026-11-25 03:00 in Shanghai (19:00 UTC the day before), 6 hours of grace: still the 24th.
    due = due_for_closing(datetime(2026, 11, 24, 19, tzinfo=UTC), timedelta(hours=6), 480)
    assert [(p.granularity, p.label) for p in due] == [("day", date(2026, 11, 23)), ("week", date(2026, 11, 16)),
                                                       ("month", date(2026, 10, 1))]
    due = due_for_closing(datetime(2026, 12, 1, 0, tzinfo=UTC), timedelta(0), 480)  # 08:00 on 1 December
    assert [(p.granularity, p.label) for p in due] == [("day", date(2026, 11, 30)), ("week", date(2026, 11, 23)),
                                                       ("month", date(2026, 11, 1))]


def test_statement_ids_round_trip_and_strangers_are_refused():
    period = period_of("week", date(2026, 11, 26), 480)
    sid = statement_id("store:loc_sh_jingan", period)
    assert sid == "stm_week_20261123_store:loc_sh_jingan"
    assert parse_statement_id(sid, 480) == ("store:loc_sh_jingan", period)
    for bad in ("stm_week_20261126_hq", "stm_year_20260101_hq", "nope", "stm_day_2026xx01_hq"):
        with pytest.raises(PeriodError):
            parse_statement_id(bad, 480)


def test_a_statement_runs_from_opening_to_closing_and_exports_csv():
    period = period_of("day", date(2026, 11, 23), 0)
    lines = [StatementLine("ent_2", period.start_ms + 20, "pst_2", "refund", "ord_1", 300, 0, "=HYPERLINK()"),
             StatementLine("ent_1", period.start_ms + 10, "pst_1", "sale", "ord_1", 0, 1000)]
    statement = build_statement("store:loc_a", period, 500, lines)
    assert (statement.opening, statement.total_credits, statement.total_debits, statement.closing) == \
        (500, 1000, 300, 1200)
    assert [row["balance"] for row in statement.to_dict()["entries"]] == [1500, 1200]
    text = to_csv(statement)
    assert "opening" in text and text.strip().endswith(",closing,,300,1000,1200,")
    assert "'=HYPERLINK()" in text  # no formula injection into spreadsheets
    with pytest.raises(ValueError):
        build_statement("store:loc_a", period, 0, [StatementLine("e", period.end_ms, "p", "sale", None, 0, 1)])


def test_who_may_read_which_account():
    franchisee = dict(roles={"franchisee"}, franchisee_id="frn_1", store_ids={"loc_f"})
    assert can_read("franchisee:frn_1", **franchisee)
    assert not can_read("franchisee:frn_2", **franchisee)
    assert not can_read("store:loc_f", **franchisee)
    manager = dict(roles={"store_manager"}, franchisee_id=None, store_ids={"loc_a"})
    assert can_read("store:loc_a", **manager) and not can_read("store:loc_b", **manager)
    assert not can_read("hq", **manager)
    assert can_read("franchisee:frn_2", roles={"hq_admin"}, franchisee_id=None, store_ids=set())


# -- payouts -------------------------------------------------------------------------------------
def test_payouts_pay_what_is_earned_and_not_yet_batched():
    assert payable_amount(1000, 0) == 1000
    assert payable_amount(1000, 1000) == 0
    assert payable_amount(900, 1000) == 0  # refunds after a payout: nothing now, recovered later
    check_transition("pending", "paid")
    with pytest.raises(PayoutError):
        check_transition("paid", "cancelled")


# -- reconciliation ------------------------------------------------------------------------------
def _captured(payment_id: str, amount: int, fee: int | None = None) -> CapturedPayment:
    return CapturedPayment(payment_id, f"ord_{payment_id}", "wechat", amount, fee,
                           datetime(2026, 11, 22, tzinfo=UTC))


def test_reconciliation_reports_missing_extra_and_mismatched_only():
    rows = parse_provider_csv("payment_id,amount,fee,settled_at\n"
                              "p1,1000,6,2026-11-23T02:00:00Z\n"
                              "p2,1999,12,2026-11-23T02:00:00Z\n"
                              "p3,500,3,2026-11-23T02:00:00+08:00\n"
                              "p9,700,,2026-11-23T02:00:00Z\n")
    known = {p.payment_id: p for p in (_captured("p1", 1000, 6), _captured("p2", 2000), _captured("p3", 500, 4),
                                       _captured("p4", 800))}
    result = reconcile(rows, known, ["p1", "p2", "p3", "p4"])
    assert result.matched == ("p1",)
    assert [m["payment_id"] for m in result.missing] == ["p4"]
    assert [e["payment_id"] for e in result.extra] == ["p9"]
    assert [(m["payment_id"], m["differences"]) for m in result.mismatched] == [("p2", ["amount"]), ("p3", ["fee"])]
    assert result.mismatched[0]["amount_difference"] == -1


@pytest.mark.parametrize("text, line", [
    ("payment_id,fee\np1,1\n", 1),
    ("payment_id,amount,fee,settled_at\np1,12.50,0,2026-11-23T00:00:00Z\n", 2),
    ("payment_id,amount,fee,settled_at\np1,1,0,yesterday\n", 2),
    ("payment_id,amount,fee,settled_at\np1,1,0,2026-11-23T00:00:00\n", 2),
    ("payment_id,amount,fee,settled_at\np1,1,0,2026-11-23T00:00:00Z\np1,1,0,2026-11-23T00:00:00Z\n", 3),
    ("payment_id,amount,fee,settled_at\n,1,0,2026-11-23T00:00:00Z\n", 2),
])
def test_a_broken_provider_file_is_refused_with_its_line(text, line):
    with pytest.raises(ReconciliationFileError) as error:
        parse_provider_csv(text)
    assert error.value.line == line


def test_the_business_day_of_an_instant_turns_at_local_midnight_not_utc_midnight():
    from services.settlement.domain.periods import local_day_of
    assert local_day_of(datetime(2026, 5, 1, 15, 59, 59, tzinfo=UTC), "Asia/Shanghai") == date(2026, 5, 1)
    assert local_day_of(datetime(2026, 5, 1, 16, 0, tzinfo=UTC), "Asia/Shanghai") == date(2026, 5, 2)
    day = period_of("day", date(2026, 5, 2), "Asia/Shanghai")
    assert (day.start, day.end, day.time_zone) == (datetime(2026, 5, 1, 16, tzinfo=UTC),
                                                   datetime(2026, 5, 2, 16, tzinfo=UTC), "Asia/Shanghai")
    # A zone with daylight saving: a local day there can be 23 hours long.
    spring = period_of("day", date(2026, 3, 29), "Europe/Berlin")
    assert spring.end - spring.start == timedelta(hours=23)
