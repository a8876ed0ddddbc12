from datetime import UTC, datetime

import pytest

from services.orders.domain import pickup
from services.orders.domain.lifecycle import OrderError

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SECRET = "s3cret"


def ready_order(code="123456"):
    order = {"_id": "ord_1", "status": "ready_for_pickup", "fulfilment": {"type": "pickup"}, "timeline": []}
    return pickup.issue(order, SECRET, code)


def test_codes_are_six_digits_including_leading_zeros():
    assert pickup.new_code(lambda n: 42) == "000042"
    assert len(pickup.new_code()) == 6 and pickup.new_code().isdigit()


def test_the_order_keeps_only_a_keyed_hash_bound_to_the_order():
    order = ready_order("123456")
    assert "123456" not in str(order)
    assert pickup.hash_code(SECRET, "ord_1", "123456") != pickup.hash_code(SECRET, "ord_2", "123456")
    assert pickup.hash_code(SECRET, "ord_1", "123456") != pickup.hash_code("other", "ord_1", "123456")


def test_right_code_is_accepted():
    order = ready_order()
    assert pickup.verify(order, " 123456 ", SECRET, 5) == pickup.PickupOutcome.ACCEPTED


def test_wrong_codes_count_and_lock_at_the_limit():
    order = ready_order()
    for attempt in range(1, 5):
        assert pickup.verify(order, "000000", SECRET, 5) == pickup.PickupOutcome.REFUSED
        assert order["pickup"]["failed_attempts"] == attempt
    assert pickup.verify(order, "999999", SECRET, 5) == pickup.PickupOutcome.LOCKED_NOW
    with pytest.raises(OrderError) as error:
        pickup.verify(order, "123456", SECRET, 5)  # even the right code: locked
    assert error.value.code == "pickup-locked"


def test_garbage_codes_are_refused_not_crashing():
    order = ready_order()
    assert pickup.verify(order, "12345", SECRET, 5) == pickup.PickupOutcome.REFUSED
    assert pickup.verify(order, "abcdef", SECRET, 5) == pickup.PickupOutcome.REFUSED


def test_reset_issues_a_new_code_and_unlocks():
    order = ready_order("111111")
    for _ in range(5):
        pickup.verify(order, "000000", SECRET, 5)
    assert order["pickup"]["locked"]
    pickup.reset(order, SECRET, "222222", "staff:mgr", NOW)
    assert {k: v for k, v in order["pickup"].items() if k != "code_sealed"} == {
        "code_hash": pickup.hash_code(SECRET, "ord_1", "222222"), "failed_attempts": 0, "locked": False}
    assert pickup.code_to_send(order, SECRET) == "222222"
    assert pickup.verify(order, "111111", SECRET, 5) == pickup.PickupOutcome.REFUSED
    assert pickup.verify(order, "222222", SECRET, 5) == pickup.PickupOutcome.ACCEPTED
    assert order["timeline"][-1]["event"] == "pickup_code_reset"


def test_only_a_ready_order_can_be_handed_over():
    order = ready_order()
    order["status"] = "confirmed"
    with pytest.raises(OrderError) as error:
        pickup.verify(order, "123456", SECRET, 5)
    assert error.value.code == "illegal-transition"


def test_the_code_to_send_opens_only_with_the_secret_and_only_while_the_order_waits():
    order = ready_order("123456")
    assert pickup.code_to_send(order, SECRET) == "123456"
    with pytest.raises(OrderError) as error:
        pickup.code_to_send(order, "another-secret")
    assert error.value.code == "no-pickup-code"
    # The sealed code is bound to its order: copied onto another order it does not open.
    other = {**ready_order("654321"), "_id": "ord_2"}
    other["pickup"] = {**other["pickup"], "code_sealed": order["pickup"]["code_sealed"]}
    with pytest.raises(OrderError):
        pickup.code_to_send(other, SECRET)
    for _ in range(5):
        pickup.verify(order, "000000", SECRET, 5)
    with pytest.raises(OrderError):  # locked: nothing to send until a manager resets it
        pickup.code_to_send(order, SECRET)
    order = ready_order()
    order["status"] = "picked_up"
    with pytest.raises(OrderError):
        pickup.code_to_send(order, SECRET)
