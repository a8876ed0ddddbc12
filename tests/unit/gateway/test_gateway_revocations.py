"""Which tokens the gateway refuses after membership revoked their session or their account."""
from libs.principal import Principal
from services.gateway.revocations import Revocations


def token(sub: str, sid: str | None = None, iat_ms: int | None = None, iat: int | None = None) -> Principal:
    claims = {"sub": sub, "roles": ["store_staff"], **({"sid": sid} if sid else {}),
              **({"iat_ms": iat_ms} if iat_ms is not None else {}), **({"iat": iat} if iat is not None else {})}
    return Principal.from_claims(claims)


def test_an_ended_session_and_tokens_issued_before_an_account_revocation_are_refused():
    revocations = Revocations()
    revocations.add([{"kind": "session", "sid": "rtf_1", "at_ms": 10, "expires_at_ms": 1_000},
                     {"kind": "subject", "subject": "stf_1", "not_before_ms": 5_000, "at_ms": 20,
                      "expires_at_ms": 9_000}])
    assert revocations.revoked(token("mbr_1", sid="rtf_1"))
    assert not revocations.revoked(token("mbr_1", sid="rtf_2"))
    assert revocations.revoked(token("stf_1", iat_ms=4_999))
    assert not revocations.revoked(token("stf_1", iat_ms=5_000))   # a login right after the change
    assert revocations.revoked(token("stf_1", iat=4))               # an older token without iat_ms
    assert revocations.revoked(token("stf_1"))                      # no issue time at all: refused
    assert revocations.latest_ms == 20


def test_a_later_revocation_only_moves_forward_and_expired_ones_are_dropped():
    revocations = Revocations()
    revocations.add([{"kind": "subject", "subject": "stf_1", "not_before_ms": 5_000, "at_ms": 1, "expires_at_ms": 9}])
    revocations.add([{"kind": "subject", "subject": "stf_1", "not_before_ms": 3_000, "at_ms": 2, "expires_at_ms": 9}])
    assert revocations.revoked(token("stf_1", iat_ms=4_000))
    revocations.prune(now_ms=10)
    assert len(revocations) == 0 and not revocations.revoked(token("stf_1", iat_ms=4_000))
