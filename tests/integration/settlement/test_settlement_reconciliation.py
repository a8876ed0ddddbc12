"""The provider's file against the captured payments: a planted missing payment and a planted
amount mismatch are reported, and nothing else."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.integration.settlement.settlement_kit import new_order_id, order_data

LINES = [{"sku_id": "sku_tee_classic_whi_s", "qty": 1, "unit_price": 9900, "cost_price": 4200}]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_reconciliation_reports_the_planted_missing_payment_and_mismatch_and_nothing_else(settlement):
    window_start = (datetime.now(UTC) - timedelta(days=2)).replace(hour=1, minute=0, second=0, microsecond=0)
    window_end = window_start + timedelta(hours=1)
    captured = {}
    for index in range(4):
        order_id = new_order_id()
        data = order_data(order_id, channel="app", staff_id=None, fee=59 + index,
                          fulfilment={"type": "ship", "location_id": "loc_sh_jingan"},
                          lines=[{**LINES[0], "qty": index + 1}])
        captured[data["payment"]["payment_id"]] = data
        await settlement.publish("orders.order.confirmed", data,
                                 occurred_at=window_start + timedelta(minutes=5 * index))
    # Captured just before the window but settled in this file: known, so neither missing nor extra.
    early_order = new_order_id()
    early = order_data(early_order, channel="app", staff_id=None, fee=59,
                       fulfilment={"type": "ship", "location_id": "loc_sh_jingan"}, lines=LINES)
    await settlement.publish("orders.order.confirmed", early, occurred_at=window_start - timedelta(minutes=1))
    for data in [*captured.values(), early]:
        await settlement.wait_for_postings(data["order_id"], ["capture"])

    payment_ids = list(captured)
    missing_id, mismatched_id = payment_ids[1], payment_ids[2]
    rows = ["payment_id,amount,fee,settled_at"]
    for payment_id, data in [*captured.items(), (early["payment"]["payment_id"], early)]:
        if payment_id == missing_id:
            continue
        amount = data["payment"]["amount"] - (100 if payment_id == mismatched_id else 0)
        rows.append(f"{payment_id},{amount},{data['payment']['fee']},{iso(window_end + timedelta(hours=20))}")
    body = "\n".join(rows) + "\n"
    params = {"captured_from": iso(window_start), "captured_to": iso(window_end)}

    headers = {**settlement.admin, "Content-Type": "text/csv", "Idempotency-Key": "recon-1"}
    status, report = await settlement.post("/settlement/reconciliations", data=body, params=params, headers=headers)
    assert status == 201, report
    assert report["status"] == "discrepancies"
    assert [(m["payment_id"], m["order_id"]) for m in report["missing"]] == \
        [(missing_id, captured[missing_id]["order_id"])]
    assert [(m["payment_id"], m["differences"], m["amount_difference"]) for m in report["mismatched"]] == \
        [(mismatched_id, ["amount"], -100)]
    assert report["extra"] == []
    assert (report["rows"], report["expected"], report["matched"]) == (4, 4, 3)

    # The same upload again under the same key is the same report; the stored report reads the same.
    status, again = await settlement.post("/settlement/reconciliations", data=body, params=params, headers=headers)
    assert status == 201 and again["id"] == report["id"]
    status, stored = await settlement.get(f"/settlement/reconciliations/{report['id']}")
    assert status == 200 and stored["missing"] == report["missing"] and stored["mismatched"] == report["mismatched"]

    # A payment the provider settled that no order ever captured is "extra".
    status, extra = await settlement.post("/settlement/reconciliations", params=params, headers=settlement.admin,
                                          data=body + f"pay_unknown,500,3,{iso(window_end)}\n")
    assert status == 201 and [e["payment_id"] for e in extra["extra"]] == ["pay_unknown"]


async def test_a_bad_settlement_file_or_window_is_a_clear_4xx(settlement):
    now = datetime.now(UTC)
    params = {"captured_from": iso(now - timedelta(hours=1)), "captured_to": iso(now)}
    status, problem = await settlement.post("/settlement/reconciliations", params=params, headers=settlement.admin,
                                            data="payment_id,amount,fee,settled_at\np1,12.5,0,2026-01-01T00:00:00Z\n")
    assert status == 422 and problem["type"].endswith("/invalid-settlement-file") and problem["line"] == 2
    status, problem = await settlement.post("/settlement/reconciliations", headers=settlement.admin,
                                            data="payment_id,amount,fee,settled_at\n")
    assert status == 422 and problem["type"].endswith("/validation-error")
    status, problem = await settlement.post("/settlement/reconciliations", headers=settlement.admin,
                                            params={"captured_from": params["captured_to"],
                                                    "captured_to": params["captured_from"]},
                                            data="payment_id,amount,fee,settled_at\n")
    assert status == 422 and problem["type"].endswith("/invalid-window")
    status, problem = await settlement.post("/settlement/reconciliations", params=params, headers=settlement.admin,
                                            data=b"\xff\xfe\x00bad")
    assert status == 400
    franchisee = settlement.franchisee("frn_dongfang", ["loc_sh_lujiazui"])
    status, problem = await settlement.post("/settlement/reconciliations", params=params, headers=franchisee,
                                            data="payment_id,amount,fee,settled_at\n")
    assert status == 403
    status, listing = await settlement.get("/settlement/reconciliations")
    assert status == 200 and listing["items"] == []  # nothing was stored by the refused uploads
