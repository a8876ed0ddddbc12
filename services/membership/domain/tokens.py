"""Token claims: who the bearer is and for how long. Pure: the signing happens in the key ring."""
from __future__ import annotations

import hashlib
from typing import Any


def claims(*, subject: str, roles: list[str], now_s: int, ttl_s: int, issuer: str, audience: str,
           issued_ms: int | None = None, **identity: Any) -> dict[str, Any]:
    """`iat_ms`: the issue time to the millisecond, so "every token issued before this change" (a revocation)
    can be told apart from a login one moment after it, within the same second."""
    body: dict[str, Any] = {"sub": subject, "roles": sorted(set(roles)), "iss": issuer, "aud": audience,
                            "iat": now_s, "nbf": now_s, "exp": now_s + ttl_s,
                            "iat_ms": issued_ms if issued_ms is not None else now_s * 1000}
    body.update({k: v for k, v in identity.items() if v is not None})
    return body


def member_identity(member_id: str) -> dict[str, Any]:
    return {"subject": member_id, "roles": ["customer"], "member_id": member_id}


def staff_identity(staff: dict[str, Any]) -> dict[str, Any]:
    identity: dict[str, Any] = {"subject": staff["_id"], "roles": list(staff["roles"]), "staff_id": staff["_id"],
                                "store_ids": sorted(staff.get("store_ids") or [])}
    if staff.get("franchisee_id"):
        identity["franchisee_id"] = staff["franchisee_id"]
    return identity


def service_identity(client_id: str, scopes: frozenset[str] | set[str]) -> dict[str, Any]:
    """A service's identity for one called service: only the scopes it holds there."""
    return {"subject": f"svc:{client_id}", "roles": ["service"], "client_id": client_id,
            "scope": " ".join(sorted(scopes))}


def token_answer(access_token: str, ttl_s: int) -> dict[str, Any]:
    return {"access_token": access_token, "token_type": "Bearer", "expires_in": ttl_s}


def refresh_digest(refresh_token: str) -> str:
    """Refresh tokens are stored by digest, so a database reader cannot use them."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()
