"""Who is calling: the identity a verified token carries. Pure, so domain rules can reason about it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("customer", "store_staff", "store_manager", "franchisee", "hq_admin", "service")


@dataclass(frozen=True)
class Principal:
    subject: str
    roles: frozenset[str]
    member_id: str | None = None
    staff_id: str | None = None
    store_ids: frozenset[str] = field(default_factory=frozenset)
    franchisee_id: str | None = None
    # A service token's scopes: which internal routes of the service it was issued for it may call.
    scopes: frozenset[str] = field(default_factory=frozenset)
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def has(self, *roles: str) -> bool:
        return bool(self.roles.intersection(roles))

    def has_scope(self, scope: str) -> bool:
        return self.is_service and scope in self.scopes

    @property
    def is_service(self) -> bool:
        return "service" in self.roles

    @property
    def is_admin(self) -> bool:
        """HQ. A service is never an administrator: it may do what its scopes name, and nothing else."""
        return "hq_admin" in self.roles

    def can_see_store(self, store_id: str | None) -> bool:
        return self.is_admin or (store_id is not None and store_id in self.store_ids)

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> Principal:
        return cls(subject=str(claims["sub"]), roles=frozenset(claims.get("roles", [])),
                   member_id=claims.get("member_id"), staff_id=claims.get("staff_id"),
                   store_ids=frozenset(claims.get("store_ids", [])), franchisee_id=claims.get("franchisee_id"),
                   scopes=frozenset(str(claims.get("scope") or "").split()), claims=claims)
