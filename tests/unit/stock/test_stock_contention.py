"""Contention that outlasts the transaction retries is a 503 with Retry-After, never a 500 (fake Mongo)."""
import pytest
from pymongo.errors import DuplicateKeyError, OperationFailure

from libs.http import problem_of_refusal
from libs.mongo import ConcurrencyConflict
from libs.refusal import UNAVAILABLE, Refusal
from services.stock.usecases.core import transaction_replaying_duplicates


class FakeMongo:
    def __init__(self, *outcomes) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    @staticmethod
    def current_session():
        return None  # no unit of work in progress: this call owns it

    async def transaction(self, unit):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def test_a_duplicate_key_race_is_answered_by_running_the_unit_again():
    mongo = FakeMongo(DuplicateKeyError("E11000 order_unique"), "replayed")
    assert await transaction_replaying_duplicates(mongo, None) == "replayed"
    assert mongo.calls == 2


@pytest.mark.parametrize("error", [ConcurrencyConflict("level changed"),
                                   OperationFailure("write conflict", 112,
                                                    {"errorLabels": ["TransientTransactionError"]})])
async def test_exhausted_retries_are_a_503_with_retry_after(error):
    with pytest.raises(Refusal) as answer:
        await transaction_replaying_duplicates(FakeMongo(error), None)
    assert answer.value.kind == UNAVAILABLE and answer.value.code == "contention"
    problem = problem_of_refusal(answer.value)
    assert problem.status == 503 and problem.headers["Retry-After"] == "1"


async def test_other_database_errors_are_not_disguised():
    with pytest.raises(OperationFailure):
        await transaction_replaying_duplicates(FakeMongo(OperationFailure("bad", 2)), None)
