import pytest
from hypothesis import given, strategies as st

from libs.refusal import INVALID
from services.orders.domain.lifecycle import OrderError
from services.orders.domain.pricing import allocate, apply_discounts, payment_fee, price_lines, refund_for

QUOTES = {"sku_a": {"sku_id": "sku_a", "product_id": "prd_a", "category": "tees", "unit_price": 9500,
                    "base_price": 9900, "cost_price": 4200},
          "sku_b": {"sku_id": "sku_b", "product_id": "prd_b", "category": "jeans", "unit_price": 33333,
                    "base_price": 33333, "cost_price": 10000}}


def test_allocation_gives_leftover_fen_to_largest_remainders():
    # 100 over 1:1:1 -> 33.33 each; the one leftover fen goes to the first line on a tie.
    assert allocate(100, [1, 1, 1]) == [34, 33, 33]
    # 10 over 3:7 is exact.
    assert allocate(10, [3, 7]) == [3, 7]
    # 5 over 1:2:2 -> exact shares 1, 2, 2.
    assert allocate(5, [1, 2, 2]) == [1, 2, 2]
    # 7 over 2:2:3 -> 2, 2, 3 exactly.
    assert allocate(7, [2, 2, 3]) == [2, 2, 3]
    # 3 over 5:5:1 -> shares 1.36, 1.36, 0.27 -> floors 1,1,0, leftover to the largest remainder (first line).
    assert allocate(3, [5, 5, 1]) == [2, 1, 0]


@given(st.integers(min_value=0, max_value=10**7),
       st.lists(st.integers(min_value=1, max_value=10**6), min_size=1, max_size=20))
def test_allocation_always_sums_exactly_and_stays_proportional(amount, weights):
    parts = allocate(amount, weights)
    assert sum(parts) == amount
    total = sum(weights)
    for part, weight in zip(parts, weights):
        assert abs(part - amount * weight / total) < 1


def test_allocating_over_zero_weights_is_refused():
    with pytest.raises(ValueError):
        allocate(5, [0, 0])
    assert allocate(0, [0, 0]) == [0, 0]


def test_lines_are_priced_from_the_quote_and_duplicates_merged():
    lines = price_lines([{"sku_id": "sku_a", "qty": 1}, {"sku_id": "sku_b", "qty": 2}, {"sku_id": "sku_a", "qty": 2}],
                        QUOTES)
    assert [(l["sku_id"], l["qty"], l["subtotal"]) for l in lines] == [("sku_a", 3, 28500), ("sku_b", 2, 66666)]
    assert lines[0]["cost_price"] == 4200 and lines[0]["category"] == "tees"


def test_unknown_sku_is_not_sellable():
    with pytest.raises(OrderError) as error:
        price_lines([{"sku_id": "sku_x", "qty": 1}], QUOTES)
    assert error.value.code == "sku-not-sellable" and error.value.kind == INVALID


def test_discounts_are_split_over_lines_and_add_up_to_the_fen():
    lines = price_lines([{"sku_id": "sku_a", "qty": 1}, {"sku_id": "sku_b", "qty": 1}], QUOTES)
    priced, totals = apply_discounts(lines, 2000, 1001)
    assert totals == {"subtotal": 42833, "discount": 2000, "points_discount": 1001, "total": 39832}
    assert sum(l["discount"] for l in priced) == 2000
    assert sum(l["points_discount"] for l in priced) == 1001
    assert sum(l["line_total"] for l in priced) == totals["total"]
    # proportional: the 33333 line carries most of it
    assert priced[1]["discount"] > priced[0]["discount"]


def test_discounts_above_the_subtotal_are_refused():
    lines = price_lines([{"sku_id": "sku_a", "qty": 1}], QUOTES)
    with pytest.raises(OrderError) as error:
        apply_discounts(lines, 9000, 501)
    assert error.value.code == "discount-exceeds-subtotal"


def test_partial_returns_refund_exactly_the_line_total_in_the_end():
    line = {"sku_id": "sku_a", "qty": 3, "line_total": 10000}
    first = refund_for(line, 0, 1)
    second = refund_for(line, 1, 1)
    third = refund_for(line, 2, 1)
    assert (first, second, third) == (3333, 3333, 3334)
    assert first + second + third == 10000
    with pytest.raises(OrderError) as error:
        refund_for(line, 3, 1)
    assert error.value.code == "return-exceeds-purchase"


def test_provider_fee_rounds_half_up():
    assert payment_fee(9500, 60) == 57
    assert payment_fee(12345, 60) == 74  # 74.07
    assert payment_fee(250, 60) == 2     # 1.5 -> 2


def test_a_coupon_scoped_to_one_sku_discounts_only_that_line():
    lines = price_lines([{"sku_id": "sku_a", "qty": 1}, {"sku_id": "sku_b", "qty": 1}], QUOTES)
    priced, totals = apply_discounts(lines, 1500, 0, coupons=[{"discount": 1500, "sku_ids": ["sku_b"]}])
    by_sku = {l["sku_id"]: l for l in priced}
    assert by_sku["sku_a"]["discount"] == 0 and by_sku["sku_a"]["line_total"] == by_sku["sku_a"]["subtotal"]
    assert by_sku["sku_b"]["discount"] == 1500
    assert totals["discount"] == 1500


def test_points_are_shared_over_what_lines_have_left_after_coupons():
    # a: 9,500 fen, b: 33,333 fen; a coupon takes 9,500 off a, so points can only land on b.
    lines = price_lines([{"sku_id": "sku_a", "qty": 1}, {"sku_id": "sku_b", "qty": 1}], QUOTES)
    a = next(l for l in lines if l["sku_id"] == "sku_a")["subtotal"]
    priced, _ = apply_discounts(lines, a, 1000, coupons=[{"discount": a, "sku_ids": ["sku_a"]}])
    by_sku = {l["sku_id"]: l for l in priced}
    assert by_sku["sku_a"]["line_total"] == 0 and by_sku["sku_a"]["points_discount"] == 0
    assert by_sku["sku_b"]["points_discount"] == 1000


def test_coupons_that_do_not_add_up_or_exceed_their_lines_are_refused():
    lines = price_lines([{"sku_id": "sku_a", "qty": 1}, {"sku_id": "sku_b", "qty": 1}], QUOTES)
    a = next(l for l in lines if l["sku_id"] == "sku_a")["subtotal"]
    with pytest.raises(OrderError):
        apply_discounts(lines, 100, 0, coupons=[{"discount": 99, "sku_ids": ["sku_a"]}])
    with pytest.raises(OrderError) as error:
        apply_discounts(lines, a + 1, 0, coupons=[{"discount": a + 1, "sku_ids": ["sku_a"]}])
    assert error.value.code == "discount-exceeds-subtotal"


@st.composite
def baskets(draw):
    skus = [f"sku_{i}" for i in range(draw(st.integers(1, 6)))]
    lines = [{"sku_id": s, "subtotal": draw(st.integers(0, 100_000))} for s in skus]
    subtotal = sum(l["subtotal"] for l in lines)
    coupons, granted = [], 0
    for _ in range(draw(st.integers(0, 3))):
        scope = draw(st.lists(st.sampled_from(skus), unique=True, min_size=1))
        eligible = sum(l["subtotal"] for l in lines if l["sku_id"] in scope)
        # the bound membership applies: what its lines have left after the coupons before it, at worst
        room = max(0, min(eligible - granted, subtotal - granted))
        discount = draw(st.integers(0, room))
        granted += discount
        coupons.append({"discount": discount, "sku_ids": scope})
    points = draw(st.integers(0, subtotal - granted))
    return lines, coupons, points


@given(baskets())
def test_line_discounts_sum_to_the_order_discount_and_never_touch_an_ineligible_line(basket):
    lines, coupons, points = basket
    coupon_discount = sum(c["discount"] for c in coupons)
    priced, totals = apply_discounts(lines, coupon_discount, points, coupons=coupons)
    assert sum(l["discount"] for l in priced) == coupon_discount == totals["discount"]
    assert sum(l["points_discount"] for l in priced) == points
    assert sum(l["line_total"] for l in priced) == totals["total"]
    in_some_scope = {s for c in coupons if c["discount"] for s in c["sku_ids"]}
    for line in priced:
        assert line["line_total"] >= 0
        if line["sku_id"] not in in_some_scope:
            assert line["discount"] == 0
