"""The token signing keys are stored encrypted with MEMBERSHIP_SIGNING_KEY_PASSPHRASE: a database dump alone
cannot mint tokens. A ring stored unencrypted (before a passphrase was configured) is encrypted at start."""
from __future__ import annotations

import jwt
import pytest

from libs.mongo import Mongo
from services.membership.keys import KeyRing, load_private_key
from tests.integration.membership.conftest import make_settings

ENCRYPTED = "-----BEGIN ENCRYPTED PRIVATE KEY-----"


async def test_a_plain_ring_is_encrypted_at_start_and_keeps_its_keys(mongo_url, bus_namespace, start_membership):
    settings = make_settings(mongo_url, bus_namespace)
    mongo = Mongo(settings.mongo_url, settings.mongo_db)
    await mongo.start([], collections=["signing_keys"])
    try:
        plain = KeyRing(mongo, 2048, passphrase="")
        await plain.ensure()
        stored = await mongo.db["signing_keys"].find_one({"_id": "keyring"})
        assert not stored["keys"][0]["private_pem"].startswith(ENCRYPTED)

        membership = await start_membership(settings=settings)
        stored = await mongo.db["signing_keys"].find_one({"_id": "keyring"})
        pems = [k["private_pem"] for k in stored["keys"]]
        assert pems and all(pem.startswith(ENCRYPTED) for pem in pems)
        assert stored["current_kid"] == plain.current_kid  # the same key: tokens already issued keep verifying
        token = await membership.service_token()
        assert jwt.get_unverified_header(token)["kid"] == plain.current_kid

        # The stored key opens with the passphrase only.
        load_private_key(pems[0], settings.signing_key_passphrase)
        with pytest.raises((TypeError, ValueError)):
            load_private_key(pems[0], "not-the-passphrase")
    finally:
        await mongo.close()
