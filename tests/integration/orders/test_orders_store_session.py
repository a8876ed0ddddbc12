"""Scan and pay in store only while in the store (real orders, stock, catalog and membership over real HTTP).

The attack: a member placed `in_store` orders at any store without being there (taking that store's stock,
which walk-in customers may buy down to the last unit). Now the checkout names the scan token of a QR code of
that store that the member scanned a moment ago (the store session); without it nothing is reserved.
"""
from __future__ import annotations

XUJIAHUI, JINGAN = "loc_sh_xujiahui", "loc_sh_jingan"
TEE = "sku_tee_classic_whi_s"
LIN = "mbr_demo_lin"


async def store_session(suite, member: dict, qr_code: str) -> dict:
    """The member scans a QR code on the store's wall: the scan token is their store session."""
    status, scan, _ = await suite.call("POST", "/members/scan", member, service="membership", json={"code": qr_code})
    assert status == 200 and scan["scan_token"], scan
    return {"scan_token": scan["scan_token"]}


def in_store(store: str, **extra) -> dict:
    return {"channel": "store", "lines": [{"sku_id": TEE, "qty": 1}],
            "fulfilment": {"type": "in_store", "location_id": store}, **extra}


async def test_a_member_cannot_pay_in_store_without_a_session_of_that_store(suite):
    member = suite.mint.member(LIN)
    before = await suite.level(XUJIAHUI, TEE)
    elsewhere = await store_session(suite, member, "qr_store_jingan")
    someone_elses = await store_session(suite, suite.mint.member("mbr_demo_chen"), "qr_store_xujiahui")
    for attribution in (None, elsewhere, someone_elses, {"scan_token": "made-up-token-0123456789"}):
        body = in_store(XUJIAHUI, **({"attribution": attribution} if attribution else {}))
        status, problem = await suite.place(body, member)
        assert status == 403 and problem["type"].endswith("/not-in-store"), (attribution, problem)
    level = await suite.level(XUJIAHUI, TEE)
    assert (level["reserved"], level["available"]) == (before["reserved"], before["available"])  # nothing held

    status, order = await suite.place(in_store(XUJIAHUI, attribution=await store_session(
        suite, member, "qr_store_xujiahui")), member)
    assert status == 201 and order["fulfilment"]["location_id"] == XUJIAHUI, order
    # Staff ringing up a sale at their own counter need no session: they are there.
    status, order = await suite.place(in_store(JINGAN), suite.mint.staff(JINGAN))
    assert status == 201, order
