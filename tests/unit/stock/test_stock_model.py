"""Reservation state machine and movement rules on the pure core."""
import pytest

from libs.refusal import CONFLICT, INVALID, Refusal

from services.stock.domain.model import (COMMITTED, RELEASED, RESERVED, StockError, check_extendable,
                                         commit_outcome, crossed_below, plan_movement, release_outcome)


def test_commit_is_idempotent_and_refused_after_release():
    assert commit_outcome(RESERVED) is True
    assert commit_outcome(COMMITTED) is False
    with pytest.raises(StockError) as refused:
        commit_outcome(RELEASED)
    assert refused.value.code == "reservation-released" and refused.value.kind == CONFLICT
    assert isinstance(refused.value, Refusal)


def test_release_is_idempotent_and_refused_after_commit():
    assert release_outcome(RESERVED) is True
    assert release_outcome(RELEASED) is False
    with pytest.raises(StockError) as refused:
        release_outcome(COMMITTED)
    assert refused.value.code == "reservation-committed"


def test_only_a_held_reservation_extends():
    check_extendable(RESERVED)
    with pytest.raises(StockError):
        check_extendable(RELEASED)


def test_movements_move_on_hand_and_ask_for_available_when_goods_leave():
    assert plan_movement("receive", qty=5).on_hand == 5
    sale = plan_movement("sale", qty=3)
    assert sale.on_hand == -3 and sale.needs_available == 3
    assert plan_movement("adjust", delta=-2).needs_available == 2
    assert plan_movement("return_to_stock", qty=1).on_hand == 1


def test_count_sets_on_hand_and_records_the_variance_but_never_below_reserved():
    count = plan_movement("count", counted=7, on_hand=10, reserved=2)
    assert count.on_hand == -3 and count.variance == -3 and count.needs_available == 3
    with pytest.raises(StockError) as refused:
        plan_movement("count", counted=1, on_hand=10, reserved=2)
    assert refused.value.code == "count-below-reserved"


@pytest.mark.parametrize("kwargs", [dict(kind="receive", qty=0), dict(kind="adjust", delta=0),
                                    dict(kind="count", counted=-1), dict(kind="teleport", qty=1)])
def test_invalid_movements_are_client_errors(kwargs):
    with pytest.raises(StockError) as refused:
        plan_movement(**kwargs)
    assert refused.value.kind == INVALID and refused.value.code == "invalid-movement"


def test_level_low_fires_once_when_crossing_the_reorder_point():
    assert crossed_below(3, 1, 2)
    assert not crossed_below(1, 0, 2)
    assert not crossed_below(5, 3, 2)


def test_sold_out_memo_is_per_mode_forgotten_on_give_back_and_expires():
    from services.stock.domain.model import SoldOutMemo
    now = [100.0]
    memo = SoldOutMemo(ttl_s=1, clock=lambda: now[0])
    memo.mark(["sku_a"], "ship")
    assert memo.any_sold_out(["sku_b", "sku_a"], "ship")
    assert not memo.any_sold_out(["sku_a"], "in_store")  # safety stock may still sell over the counter
    memo.forget("sku_a")
    assert not memo.any_sold_out(["sku_a"], "ship")
    memo.mark(["sku_a"], "ship")
    now[0] += 1.001
    assert not memo.any_sold_out(["sku_a"], "ship")


# --- reason codes, size bound, clerks' approvals -----------------------------------------------

def test_reason_codes_fit_their_kind_and_direction():
    from services.stock.domain.model import StockError, reason_of
    assert reason_of("receive", None) == "receiving"
    assert reason_of("count", None) == "count_correction"
    assert reason_of("adjust", "found", 3) == "found"
    for kind, reason, delta, code in [("adjust", None, -1, "reason-required"), ("adjust", "damaged", 1, "invalid-reason"),
                                      ("adjust", "found", -1, "invalid-reason"), ("receive", "theft", None,
                                                                                   "invalid-reason")]:
        with pytest.raises(StockError) as refused:
            reason_of(kind, reason, delta)
        assert refused.value.code == code


def test_bulk_movements_of_clerks_need_approval_and_none_exceeds_the_bound():
    from services.stock.domain.model import LevelChange, StockError, check_size, needs_approval
    assert needs_approval("adjust", LevelChange(on_hand=-21), may_approve=False, threshold=20)
    assert not needs_approval("adjust", LevelChange(on_hand=-20), may_approve=False, threshold=20)
    assert not needs_approval("adjust", LevelChange(on_hand=-500), may_approve=True, threshold=20)
    assert not needs_approval("sale", LevelChange(on_hand=-500), may_approve=False, threshold=20)
    check_size(LevelChange(on_hand=10), 10)
    with pytest.raises(StockError) as refused:
        check_size(LevelChange(on_hand=-11), 10)
    assert refused.value.code == "movement-too-large"


def test_an_approval_is_decided_once_and_not_by_its_requester():
    from services.stock.domain.model import StockError, decide_approval
    approval = {"status": "pending", "requested_by": "stf_clerk"}
    with pytest.raises(StockError) as refused:
        decide_approval(approval, "approved", "stf_clerk")
    assert refused.value.code == "own-approval"
    decide_approval(approval, "approved", "stf_manager")
    with pytest.raises(StockError) as refused:
        decide_approval(approval, "rejected", "stf_manager")
    assert refused.value.code == "approval-decided"
