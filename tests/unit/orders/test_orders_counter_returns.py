"""Counter returns on the pure core: the customer's proof and who may take the return."""
from datetime import UTC, datetime, timedelta

import pytest

from libs.principal import Principal
from services.orders.domain.lifecycle import OrderError
from services.orders.domain.returns import authorise_counter, check_proof, issue_return_code, why_manager

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def order(**fields) -> dict:
    return {"_id": "ord_1", "status": "completed", "store_ids": ["loc_a"], "timeline": [],
            "payment": {"payment_id": "pay_1"}, **fields}


def refused(code: str, call, *args) -> None:
    with pytest.raises(OrderError) as refusal:
        call(*args)
    assert refusal.value.code == code


def test_a_return_code_works_once_until_it_expires():
    doc = order()
    code = issue_return_code(doc, "ABCD2345", "member:mbr_1", NOW, 600)["return_code"]
    assert "ABCD2345" not in str(doc["return_code"])  # only its digest is kept
    refused("wrong-return-proof", check_proof, doc, {"return_code": "ABCD2346"}, NOW)
    refused("wrong-return-proof", check_proof, doc, {"return_code": code}, NOW + timedelta(seconds=600))
    assert check_proof(doc, {"return_code": code.lower()}, NOW) == "return_code"
    refused("wrong-return-proof", check_proof, doc, {"return_code": code}, NOW)


def test_the_payment_reference_is_proof_and_nothing_is_not():
    assert check_proof(order(), {"payment_id": "pay_1"}, NOW) == "payment"
    refused("wrong-return-proof", check_proof, order(), {"payment_id": "pay_2"}, NOW)
    refused("wrong-return-proof", check_proof, order(payment=None), {"payment_id": "pay_1"}, NOW)
    refused("return-proof-required", check_proof, order(), None, NOW)
    refused("not-returnable", issue_return_code, order(status="shipped"), "ABCD2345", "member:mbr_1", NOW, 600)


def test_cross_store_and_high_value_returns_need_a_manager_of_the_receiving_store():
    clerk = Principal("stf_1", frozenset({"store_staff"}), staff_id="stf_1", store_ids=frozenset({"loc_a", "loc_b"}))
    manager_b = Principal("stf_2", frozenset({"store_manager"}), staff_id="stf_2", store_ids=frozenset({"loc_b"}))
    assert why_manager(order(), "loc_a", 100, 1000) is None
    assert why_manager(order(), "loc_b", 100, 1000) == "cross-store"
    assert why_manager(order(), "loc_a", 1001, 1000) == "high-value"
    authorise_counter(clerk, order(), "loc_a", 100, 1000)
    refused("manager-required", authorise_counter, clerk, order(), "loc_b", 100, 1000)
    refused("manager-required", authorise_counter, clerk, order(), "loc_a", 5000, 1000)
    authorise_counter(manager_b, order(), "loc_b", 5000, 1000)
