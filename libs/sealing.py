"""Pure. A short secret kept so that only the holder of a service's secret can read it back: AES-GCM under a key
derived from that secret and a purpose, bound to the id of what it belongs to (a sealed value copied onto
another record does not open). Used for codes a service must hand to notifications later, never on the bus."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


def _key(secret: str, purpose: str) -> bytes:
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()


def seal(secret: str, purpose: str, bound_to: str, text: str) -> str:
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(_key(secret, purpose)).encrypt(nonce, text.encode(), bound_to.encode())
    return base64.b64encode(nonce + sealed).decode()


def unseal(secret: str, purpose: str, bound_to: str, sealed: str) -> str | None:
    """The text, or None when the secret, the purpose or the record is not the one it was sealed for."""
    raw = base64.b64decode(sealed)
    try:
        return AESGCM(_key(secret, purpose)).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], bound_to.encode()).decode()
    except (InvalidTag, ValueError):
        return None
