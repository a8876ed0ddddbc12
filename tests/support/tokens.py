"""The one test token minter: RS256 tokens shaped like membership's, for member, staff, HQ and service callers,
and the forged ones an attacker would try (`forged_token`).

Load `mint.jwks` into a service's `TokenVerifier` (or serve it as a JWKS) and the production verification
path runs unchanged.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.auth import SERVICE_GRANTS, service_audience

ISSUER, AUDIENCE = "o2o-membership", "o2o-api"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenMint:
    """An RSA key as membership holds it, and the tokens it (or an attacker) can make."""

    def __init__(self, kid: str | None = None, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.issuer, self.audience = issuer, audience
        self.kid = kid or f"test-{uuid.uuid4().hex[:8]}"
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def jwk(self) -> dict:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key()))
        return {**public, "kid": self.kid, "alg": "RS256", "use": "sig"}

    @property
    def jwks(self) -> dict:
        return {"keys": [self.jwk()]}

    def claims(self, sub: str = "mbr_a", roles=("customer",), ttl_s: int = 3600, **extra) -> dict:
        """Claims as membership writes them; a claim given as None is left out (e.g. `exp=None`)."""
        now = int(time.time())
        claims = {"sub": sub, "roles": list(roles), "iss": self.issuer, "aud": self.audience, "iat": now,
                  "exp": now + ttl_s}
        if "customer" in roles:
            claims["member_id"] = sub
        claims.update(extra)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, sub: str = "mbr_a", roles=("customer",), ttl_s: int = 3600, headers: dict | None = None,
              **claims) -> str:
        return jwt.encode(self.claims(sub, roles, ttl_s, **claims), self.private_key, algorithm="RS256",
                          headers={"kid": self.kid, **(headers or {})})

    def forged_token(self, alg: str, secret: bytes | None, **claims) -> str:
        """A token built by hand, as an attacker would: `alg: none`, or HMAC keyed with our public key."""
        header = b64url(json.dumps({"alg": alg, "typ": "JWT", "kid": self.kid}).encode())
        payload = b64url(json.dumps(self.claims(**claims)).encode())
        signing_input = f"{header}.{payload}".encode()
        signature = b"" if secret is None else hmac.new(secret, signing_input, hashlib.sha256).digest()
        return f"{header}.{payload}.{b64url(signature)}"

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

    def service(self, name: str, audience: str, scopes=None) -> dict[str, str]:
        """A service token as membership issues it: client `name` calling `audience`, with the scopes the
        grants give it there (or `scopes`)."""
        granted = SERVICE_GRANTS.get(name, {}).get(audience, frozenset()) if scopes is None else scopes
        return self.bearer(self.token(f"svc:{name}", ["service"], aud=service_audience(audience),
                                      client_id=name, scope=" ".join(sorted(granted))))
