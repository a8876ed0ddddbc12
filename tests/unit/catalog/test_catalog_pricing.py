"""Catalog's pure core: the price band, whole-price checks, scheduled changes, status transitions."""
import pytest

from libs.refusal import CONFLICT, INVALID
from services.catalog.domain.model import (CatalogError, apply_price_change, check_channel_price, check_price,
                                           check_status_change, check_unique_barcodes, price_band, price_in_force,
                                           unit_price)


def test_band_bounds_are_inclusive_and_rounded_inward():
    assert price_band(9900, 5) == (9405, 10395)
    assert price_band(999, 5) == (950, 1048)  # 949.05 rounds up, 1048.95 rounds down: never outside
    check_channel_price(9900, 9405, 5)
    check_channel_price(9900, 10395, 5)
    for outside in (9404, 10396):
        with pytest.raises(CatalogError) as refused:
            check_channel_price(9900, outside, 5)
        assert refused.value.code == "price-out-of-band" and refused.value.kind == INVALID


def test_a_whole_price_needs_a_positive_integer_base_and_known_channels():
    check_price({"base": 100, "channels": {"app": 96}}, 5)
    for price, code in (({"base": 0}, "invalid-price"), ({"base": 99.5}, "invalid-price"),
                        ({"base": True}, "invalid-price"), ({"base": 100, "channels": {"fax": 100}}, "unknown-channel"),
                        ({"base": 100, "channels": {"app": 90}}, "price-out-of-band")):
        with pytest.raises(CatalogError) as refused:
            check_price(price, 5)
        assert refused.value.code == code


def test_a_new_base_that_strands_a_channel_price_outside_the_band_is_refused():
    current = {"base": 9900, "channels": {"app": 9500}}
    with pytest.raises(CatalogError):
        apply_price_change(current, {"base": 12000}, 5)
    assert apply_price_change(current, {"base": 12000, "channels": {"app": None}}, 5) == {"base": 12000, "channels": {}}
    assert apply_price_change(current, {"channels": {"store": 9800}}, 5) == {
        "base": 9900, "channels": {"app": 9500, "store": 9800}}
    assert current == {"base": 9900, "channels": {"app": 9500}}  # never mutated


def test_price_in_force_applies_due_schedules_in_effective_order_and_skips_invalid_ones():
    price = {"base": 10000, "channels": {}}
    schedules = [
        {"_id": "b", "effective_at_ms": 2_000, "change": {"base": 12000}},
        {"_id": "a", "effective_at_ms": 1_000, "change": {"base": 11000}},
        {"_id": "c", "effective_at_ms": 1_500, "change": {"channels": {"app": 1}}},  # out of band: skipped
        {"_id": "d", "effective_at_ms": 9_000, "change": {"base": 99}},  # not yet due
    ]
    assert price_in_force(price, schedules, 500, 5) == price
    assert price_in_force(price, schedules, 1_000, 5)["base"] == 11000
    assert price_in_force(price, schedules, 5_000, 5) == {"base": 12000, "channels": {}}


def test_unit_price_is_the_channel_price_else_the_base():
    price = {"base": 9900, "channels": {"app": 9500}}
    assert unit_price(price, "app") == 9500
    assert unit_price(price, "store") == 9900


def test_status_moves_forward_only():
    check_status_change("draft", "active")
    check_status_change("active", "archived")
    for current, target in (("archived", "active"), ("active", "draft"), ("archived", "draft")):
        with pytest.raises(CatalogError) as refused:
            check_status_change(current, target)
        assert refused.value.kind == CONFLICT


def test_repeated_barcodes_in_one_request_are_refused():
    check_unique_barcodes(["1", "2"])
    with pytest.raises(CatalogError) as refused:
        check_unique_barcodes(["1", "2", "1"])
    assert "1" in refused.value.detail
