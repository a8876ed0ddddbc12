"""The kit's verified-token cache: a token that verified is not checked again until it expires; a refused
one is checked every time; an expired one is never answered from memory."""
from __future__ import annotations

import time

import pytest

from libs.auth import TokenVerifier, verify_cached
from libs.problems import Problem
from libs.settings import ServiceSettings
from tests.support.tokens import AUDIENCE, ISSUER, TokenMint


@pytest.fixture
def verifier():
    mint = TokenMint()
    verifier = TokenVerifier(ServiceSettings(jwt_issuer=ISSUER, jwt_audience=AUDIENCE))
    verifier.load_jwks(mint.jwks)
    checks = []
    real = verifier.verify

    async def counted(token):
        checks.append(token)
        return await real(token)

    verifier.verify = counted
    return mint, verifier, checks


async def test_a_verified_token_is_checked_once(verifier):
    mint, verifier, checks = verifier
    token = mint.token("mbr_a")
    first = await verify_cached(verifier, token)
    again = await verify_cached(verifier, token)
    assert first == again and first.member_id == "mbr_a"
    assert len(checks) == 1


async def test_a_refused_token_is_checked_every_time(verifier):
    mint, verifier, checks = verifier
    forged = mint.forged_token("HS256", b"guess")
    for _ in range(2):
        with pytest.raises(Problem):
            await verify_cached(verifier, forged)
    assert len(checks) == 2


async def test_an_expired_token_is_not_answered_from_memory(verifier):
    mint, verifier, checks = verifier
    token = mint.token("mbr_a")
    await verify_cached(verifier, token)
    digest = next(iter(verifier.verified))
    verifier.verified[digest] = (time.time() - 1, verifier.verified[digest][1])  # as if its exp had passed
    await verify_cached(verifier, token)
    assert len(checks) == 2
