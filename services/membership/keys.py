"""The RS256 signing key ring, shared by every replica through the membership database.

At first start one replica's generated key wins (insert-if-absent, then everybody reads what is stored), so
replicas starting together agree. Rotation makes a new key current and keeps the previous one in the JWKS,
so tokens signed just before a rotation keep verifying until they expire.
"""
from __future__ import annotations

import asyncio
import secrets
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pymongo.errors import DuplicateKeyError

from libs.clock import now_ms
from libs.logging import get_logger
from libs.mongo import Mongo
from services.membership.repository import KeyRepository

ALGORITHM = "RS256"
KEYS_KEPT = 2  # current + previous
log = get_logger("membership.keys")


def generate_key(bits: int, passphrase: str = "") -> dict[str, Any]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    created = now_ms()
    kid = f"k{created}-{secrets.token_hex(4)}"
    encryption = serialization.BestAvailableEncryption(passphrase.encode()) if passphrase \
        else serialization.NoEncryption()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()
    public_jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    public_jwk.update({"kid": kid, "use": "sig", "alg": ALGORITHM})
    return {"kid": kid, "private_pem": pem, "public_jwk": public_jwk, "created_at_ms": created}


def load_private_key(pem: str, passphrase: str):
    """A stored key; one stored before a passphrase was configured is unencrypted, and still loads."""
    encrypted = "ENCRYPTED" in pem.splitlines()[0]
    return serialization.load_pem_private_key(pem.encode(), password=passphrase.encode() if encrypted else None)


def encrypted_pem(pem: str, passphrase: str) -> str:
    if not passphrase or "ENCRYPTED" in pem.splitlines()[0]:
        return pem
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.BestAvailableEncryption(passphrase.encode())).decode()


class KeyRing:
    def __init__(self, mongo: Mongo, bits: int = 2048, passphrase: str = "") -> None:
        self.mongo = mongo
        self.passphrase = passphrase
        self.repo = KeyRepository(mongo)
        self.bits = bits
        self._current: dict[str, Any] | None = None
        self._private_key = None
        self._public: list[dict[str, Any]] = []

    async def ensure(self) -> None:
        """Load the stored ring; create it if this is the first start anywhere."""
        stored = await self.mongo.read_committed(self.repo.get)
        if stored is None:
            candidate = await asyncio.to_thread(generate_key, self.bits, self.passphrase)
            ring = {"_id": "keyring", "version": 1, "current_kid": candidate["kid"], "keys": [candidate]}
            try:
                await self.mongo.transaction(lambda s: self.repo.insert(ring, s))
                log.info("keys.created", kid=candidate["kid"])
            except DuplicateKeyError:
                pass  # another replica created it first: use theirs
            stored = await self.mongo.read_committed(self.repo.get)
        if self.passphrase and any(encrypted_pem(k["private_pem"], self.passphrase) != k["private_pem"]
                                   for k in stored["keys"]):
            stored = await self.mongo.transaction(self._encrypt_stored_keys)
        self._load(stored)

    async def _encrypt_stored_keys(self, session) -> dict[str, Any]:
        """Keys stored unencrypted (before a passphrase was set) are rewritten encrypted with it."""
        ring = await self.repo.get(session)
        ring["keys"] = [{**k, "private_pem": encrypted_pem(k["private_pem"], self.passphrase)} for k in ring["keys"]]
        log.info("keys.encrypted_at_rest", kids=[k["kid"] for k in ring["keys"]])
        return await self.repo.save(ring, session)

    async def refresh(self) -> None:
        stored = await self.mongo.read_committed(self.repo.get)
        if stored is not None and (self._current is None or stored["current_kid"] != self._current["kid"]):
            self._load(stored)

    async def rotate(self) -> str:
        new_key = await asyncio.to_thread(generate_key, self.bits, self.passphrase)

        async def unit(session):
            ring = await self.repo.get(session)
            ring["keys"] = [new_key, *[k for k in ring["keys"] if k["kid"] == ring["current_kid"]]][:KEYS_KEPT]
            ring["current_kid"] = new_key["kid"]
            return await self.repo.save(ring, session)

        self._load(await self.mongo.transaction(unit))
        log.info("keys.rotated", kid=new_key["kid"])
        return new_key["kid"]

    def _load(self, ring: dict[str, Any]) -> None:
        current = next(k for k in ring["keys"] if k["kid"] == ring["current_kid"])
        self._private_key = load_private_key(current["private_pem"], self.passphrase)
        self._current = current
        self._public = [k["public_jwk"] for k in ring["keys"]]

    @property
    def current_kid(self) -> str:
        assert self._current is not None, "key ring not loaded"
        return self._current["kid"]

    def sign(self, claims: dict[str, Any]) -> str:
        assert self._private_key is not None, "key ring not loaded"
        return jwt.encode(claims, self._private_key, algorithm=ALGORITHM, headers={"kid": self.current_kid})

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self._public)}
