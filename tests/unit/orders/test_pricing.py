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
