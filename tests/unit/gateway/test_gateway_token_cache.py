"""The verified-token cache: never past the token's exp, never past its own ttl, bounded."""
from __future__ import annotations

from libs.auth import Principal
from services.gateway.tokens import VerifiedTokens


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def principal(exp: float) -> Principal:
    return Principal(subject="mbr_a", roles=frozenset({"customer"}), claims={"exp": exp})


def test_entry_lives_until_ttl():
    clock = Clock()
    cache = VerifiedTokens(ttl_s=30, clock=clock)
    cache.put("t", principal(clock.now + 3600))
    clock.now += 29
    assert cache.get("t") is not None
    clock.now += 1
    assert cache.get("t") is None and len(cache) == 0


def test_entry_never_outlives_the_token():
    clock = Clock()
    cache = VerifiedTokens(ttl_s=30, clock=clock)
    cache.put("t", principal(clock.now + 5))
    clock.now += 5
    assert cache.get("t") is None
    cache.put("old", principal(clock.now - 1))
    assert cache.get("old") is None


def test_only_the_exact_token_matches_and_size_is_bounded():
    clock = Clock()
    cache = VerifiedTokens(ttl_s=30, max_entries=3, clock=clock)
    for n in range(5):
        cache.put(f"t{n}", principal(clock.now + 60))
    assert len(cache) == 3 and cache.get("t0") is None and cache.get("t4") is not None
    assert cache.get("t4x") is None


def test_disabled_with_zero_ttl():
    cache = VerifiedTokens(ttl_s=0, clock=Clock())
    cache.put("t", principal(2e9))
    assert cache.get("t") is None
