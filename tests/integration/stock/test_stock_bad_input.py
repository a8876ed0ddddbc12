"""A client's mistake is a clear 4xx problem+json and changes nothing; never a 500."""
import uuid

import pytest

SKU = "sku_guard_tee"


@pytest.fixture
async def seeded(stock_api):
    loc = (await stock_api.location(id=f"loc_bad_{uuid.uuid4().hex[:6]}", name="guarded", lat=31.2, lng=121.4))["id"]
    await stock_api.stock_up(loc, SKU, 5)
    return stock_api, loc


def reservation(loc: str, **overrides) -> dict:
    return {"order_id": f"ord_{uuid.uuid4().hex[:8]}", "mode": "pickup", "location_id": loc,
            "lines": [{"sku_id": SKU, "qty": 1}], **overrides}


BAD_RESERVATIONS = [
    ("missing lines", lambda loc: {k: v for k, v in reservation(loc).items() if k != "lines"}, 422),
    ("empty lines", lambda loc: reservation(loc, lines=[]), 422),
    ("zero qty", lambda loc: reservation(loc, lines=[{"sku_id": SKU, "qty": 0}]), 422),
    ("negative qty", lambda loc: reservation(loc, lines=[{"sku_id": SKU, "qty": -3}]), 422),
    ("qty as text", lambda loc: reservation(loc, lines=[{"sku_id": SKU, "qty": "many"}]), 422),
    ("unknown mode", lambda loc: reservation(loc, mode="teleport"), 422),
    ("pickup without store", lambda loc: reservation(None), 422),
    ("unknown store", lambda loc: reservation("loc_nowhere"), 422),
    ("latitude out of range", lambda loc: reservation(loc, mode="ship", destination={"lat": 123, "lng": 1}), 422),
    ("ttl zero", lambda loc: reservation(loc, ttl_s=0), 422),
    ("bad sku id", lambda loc: reservation(loc, lines=[{"sku_id": "DROP TABLE", "qty": 1}]), 422),
]


@pytest.mark.parametrize("name,make,expected", BAD_RESERVATIONS, ids=[b[0] for b in BAD_RESERVATIONS])
async def test_bad_reservations_are_refused_and_hold_nothing(seeded, name, make, expected):
    api, loc = seeded
    status, body = await api.reserve(make(loc))
    assert status == expected, body
    assert body["status"] == expected and body["type"].startswith("https://o2o.example/problems/") and body["detail"]
    level = await api.level(loc, SKU)
    assert (level["reserved"], level["available"]) == (0, 5)


BAD_MOVEMENTS = [
    ("no key", {"kind": "receive", "sku_id": SKU, "qty": 1}, 422),
    ("unknown kind", {"kind": "steal", "key": "k1", "sku_id": SKU, "qty": 1}, 422),
    ("zero qty", {"kind": "receive", "key": "k2", "sku_id": SKU, "qty": 0}, 422),
    ("adjust without reason", {"kind": "adjust", "key": "k3", "sku_id": SKU, "delta": -1}, 422),
    ("adjust by zero", {"kind": "adjust", "key": "k4", "sku_id": SKU, "delta": 0, "reason": "damaged"}, 422),
    ("negative count", {"kind": "count", "key": "k5", "sku_id": SKU, "counted": -1}, 422),
    ("transfer to itself", {"kind": "transfer_out", "key": "k6", "sku_id": SKU, "qty": 1, "to_location_id": "SELF"}, 422),
    ("unknown field", {"kind": "receive", "key": "k7", "sku_id": SKU, "qty": 1, "price": 5}, 422),
    ("unknown transfer", {"kind": "transfer_in", "key": "k8", "transfer_id": "trf_0000"}, 422),
]


@pytest.mark.parametrize("name,body,expected", BAD_MOVEMENTS, ids=[b[0] for b in BAD_MOVEMENTS])
async def test_bad_movements_are_refused_and_change_nothing(seeded, name, body, expected):
    api, loc = seeded
    body = {**body, "location_id": loc} if body["kind"] != "transfer_in" else body
    if body.get("to_location_id") == "SELF":
        body["to_location_id"] = loc
    status, problem = await api.move(body)
    assert status == expected, problem
    assert problem["type"].startswith("https://o2o.example/problems/")
    level = await api.level(loc, SKU)
    assert (level["on_hand"], level["available"]) == (5, 5)
    _, ledger, _ = await api.call("GET", f"/stock/movements?location_id={loc}", api.admin)
    assert len(ledger["items"]) == 1


async def test_malformed_json_and_wrong_types_are_4xx_problems(seeded):
    api, loc = seeded
    cases = [
        ("POST", "/stock/movements", api.admin, {"data": b"{not json"}, 400),
        ("POST", "/stock/movements", api.admin, {"data": b""}, 400),
        ("POST", "/stock/movements", api.admin, {"json": [1, 2, 3]}, 422),
        ("POST", "/stock/internal/reservations", api.service, {"data": b"\xff\xfe"}, 400),
        ("POST", "/stock/locations", api.admin, {"json": {"name": "x", "kind": "moon", "lat": 1, "lng": 1}}, 422),
        ("POST", "/stock/locations", api.admin, {"json": {"name": "x", "kind": "store", "lat": 1, "lng": 1,
                                                          "ownership": "franchise"}}, 422),
        ("POST", "/stock/locations", api.admin, {"json": {"id": loc, "name": "dup", "kind": "store", "lat": 1,
                                                          "lng": 1}}, 409),
        ("PATCH", f"/stock/locations/{loc}", api.admin, {"json": {"daily_capacity": -1}}, 422),
        ("PATCH", "/stock/locations/loc_missing", api.admin, {"json": {"daily_capacity": 1}}, 404),
        ("GET", "/stock/availability?sku=sku_x&lat=north&lng=1", None, {}, 422),
        ("GET", "/stock/availability?lat=1&lng=1", None, {}, 422),
        ("GET", "/stock/locations?limit=0", None, {}, 422),
        ("GET", "/stock/locations?cursor=%%%", None, {}, 400),
        ("GET", "/stock/locations/loc_missing", None, {}, 404),
        ("GET", "/stock/movements?cursor=abc", api.admin, {}, 400),
        ("POST", "/stock/internal/reservations/ord_missing/commit", api.service, {}, 404),
        ("POST", "/stock/internal/reservations/ord_missing/extend", api.service, {"json": {"ttl_s": 0}}, 422),
        ("POST", "/stock/internal/reservations/ord_missing/release", api.service, {"json": {"reason": "bored"}}, 422),
    ]
    for method, path, headers, kw, expected in cases:
        status, body, response_headers = await api.call(method, path, headers, **kw)
        assert status == expected, (method, path, status, body)
        assert response_headers["Content-Type"].startswith("application/problem+json"), path
        assert body["status"] == expected and body["title"] and body["detail"]


async def test_internal_routes_need_a_service_token_and_admin_writes_need_a_role(seeded, token_mint):
    api, loc = seeded
    customer = token_mint.member("mbr_1")
    status, body = await api.reserve(reservation(loc), headers={})
    assert status == 401 and body["type"].endswith("/unauthorized")
    status, body = await api.reserve(reservation(loc), headers=customer)
    assert status == 403
    status, body = await api.reserve(reservation(loc), headers={"Authorization": "Bearer not.a.token"})
    assert status == 401 and body["type"].endswith("/invalid-token")
    status, body = await api.move({"kind": "receive", "key": "kk", "location_id": loc, "sku_id": SKU, "qty": 1},
                                  headers=customer)
    assert status == 403
    assert (await api.level(loc, SKU))["on_hand"] == 5


async def test_a_cursor_only_pages_the_list_that_issued_it(seeded):
    api, loc = seeded
    await api.stock_up(loc, "sku_guard_cap", 1)
    await api.location(id=f"loc_bad2_{uuid.uuid4().hex[:6]}", name="second", lat=31.3, lng=121.5)
    lists = {"levels": f"/stock/levels?location_id={loc}&limit=1",
             "movements": f"/stock/movements?location_id={loc}&limit=1", "locations": "/stock/locations?limit=1"}
    cursors = {}
    for name, path in lists.items():
        status, page, _ = await api.call("GET", path, api.admin)
        assert status == 200 and page["next_cursor"], (name, page)
        cursors[name] = page["next_cursor"]
    for name, path in lists.items():
        status, page, _ = await api.call("GET", f"{path}&cursor={cursors[name]}", api.admin)
        assert status == 200 and page["items"], (name, page)
        tampered = cursors[name][:-2] + ("BB" if cursors[name].endswith("AA") else "AA")
        for cursor in [c for other, c in cursors.items() if other != name] + [tampered]:
            status, problem, _ = await api.call("GET", f"{path}&cursor={cursor}", api.admin)
            assert status == 400 and problem["type"].endswith("/bad-cursor"), (name, cursor, problem)
