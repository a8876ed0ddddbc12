"""The replica pool (libs.replicas): round-robin over the replicas that are up, a refused replica skipped for a
while then tried again, every replica still tried when all are marked down."""
from __future__ import annotations

import pytest

from libs.replicas import ReplicaPool, split_urls

A, B, C = "http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_split_urls_trims_slashes_spaces_and_duplicates():
    assert split_urls(f" {A}/ ,{B},,{A}") == [A, B]
    assert split_urls(A) == [A]


def test_an_empty_setting_is_refused():
    with pytest.raises(ValueError):
        ReplicaPool("orders", " , ")


def test_calls_are_spread_round_robin():
    pool = ReplicaPool("orders", [A, B, C])
    firsts = [pool.candidates()[0] for _ in range(6)]
    assert firsts == [A, B, C, A, B, C]
    assert sorted(pool.candidates()) == [A, B, C]  # every replica is a fallback of every call


def test_a_replica_marked_down_is_skipped_until_its_time_is_up():
    clock = Clock()
    pool = ReplicaPool("orders", [A, B], down_s=5, clock=clock)
    pool.mark_down(A)
    assert [pool.candidates()[0] for _ in range(4)] == [B, B, B, B]
    assert pool.candidates()[-1] == A  # still a last resort
    assert pool.states() == {A: "down", B: "up"}
    clock.now += 5.01
    assert {pool.candidates()[0] for _ in range(4)} == {A, B}


def test_marked_up_again_at_once_when_it_answers():
    pool = ReplicaPool("orders", [A, B], down_s=60, clock=Clock())
    pool.mark_down(A)
    pool.mark_up(A)
    assert {pool.candidates()[0] for _ in range(4)} == {A, B}


def test_all_down_are_all_tried_least_recently_failed_first():
    clock = Clock()
    pool = ReplicaPool("orders", [A, B, C], down_s=5, clock=clock)
    pool.mark_down(B)
    clock.now += 1
    pool.mark_down(C)
    clock.now += 1
    pool.mark_down(A)
    assert pool.candidates() == [B, C, A]


def test_a_single_replica_is_always_the_one():
    pool = ReplicaPool("orders", A)
    pool.mark_down(A)
    assert pool.candidates() == [A] and len(pool) == 1
