"""The one test token minter: RS256 tokens shaped like membership's, for member, staff, HQ and service callers.

Load `mint.jwks` into a service's `TokenVerifier` (or serve it as a JWKS) and the production verification
path runs unchanged.
"""
from __future__ import annotations

import json
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER, AUDIENCE = "o2o-membership", "o2o-api"


class TokenMint:
    def __init__(self, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.issuer, self.audience = issuer, audience
        self.kid = f"test-{uuid.uuid4().hex[:8]}"
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        self.jwks = {"keys": [{**public, "kid": self.kid, "alg": "RS256", "use": "sig"}]}

    def token(self, sub: str, roles: list[str], ttl_s: int = 3600, **claims) -> str:
        now = int(time.time())
        payload = {"sub": sub, "roles": roles, "iss": self.issuer, "aud": self.audience, "iat": now,
                   "exp": now + ttl_s, **claims}
        return jwt.encode(payload, self.private_key, algorithm="RS256", headers={"kid": self.kid})

    @staticmethod
    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": "Bearer " + token}

    def member(self, member_id: str) -> dict[str, str]:
        return self.bearer(self.token(member_id, ["customer"], member_id=member_id))

    def staff(self, *store_ids: str, role: str = "store_staff", staff_id: str | None = None) -> dict[str, str]:
        staff_id = staff_id or f"stf_{store_ids[0] if store_ids else 'none'}_{role}"
        return self.bearer(self.token(staff_id, [role], staff_id=staff_id, store_ids=list(store_ids)))

    def franchisee(self, franchisee_id: str, *store_ids: str) -> dict[str, str]:
        return self.bearer(self.token(f"fr_{franchisee_id}", ["franchisee"], franchisee_id=franchisee_id,
                                      store_ids=list(store_ids)))

    def admin(self, staff_id: str = "stf_hq_admin") -> dict[str, str]:
        return self.bearer(self.token(staff_id, ["hq_admin"], staff_id=staff_id))

    def service(self, name: str = "orders") -> dict[str, str]:
        return self.bearer(self.token(f"svc:{name}", ["service"]))
