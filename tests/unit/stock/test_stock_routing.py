"""Routing on the pure core: nearest single store, splits, safety stock, capacity, explanations."""
from services.stock.domain.routing import Line, Point, Site, distance_m, route

# Three stores on a line east of the customer, roughly 1 km, 3 km and 6 km away.
CUSTOMER = Point(31.2300, 121.4500)
NEAR = Site("loc_near", "store", 31.2300, 121.4605, daily_capacity=10)
MID = Site("loc_mid", "store", 31.2300, 121.4815, daily_capacity=10)
FAR = Site("loc_far", "store", 31.2300, 121.5130, daily_capacity=10, ownership="franchise", franchisee_id="frn_x")
WAREHOUSE = Site("loc_wh", "warehouse", 31.3700, 121.2600, pickup=False, daily_capacity=500)


def test_distance_is_metres_on_the_sphere():
    assert 950 < distance_m(CUSTOMER, Point(NEAR.lat, NEAR.lng)) < 1050
    assert distance_m(CUSTOMER, CUSTOMER) == 0


def test_ship_picks_the_nearest_single_location_that_has_everything():
    stock = {("loc_near", "sku_a"): 5, ("loc_mid", "sku_a"): 5, ("loc_far", "sku_a"): 50}
    decision = route("ship", [Line("sku_a", 2)], [FAR, MID, NEAR], stock, destination=CUSTOMER)
    assert decision.strategy == "single_location"
    assert [a.location_id for a in decision.allocations] == ["loc_near"]
    assert decision.allocations[0].lines == (Line("sku_a", 2),)


def test_ship_prefers_one_farther_location_over_a_split():
    stock = {("loc_near", "sku_a"): 2, ("loc_near", "sku_b"): 0, ("loc_mid", "sku_a"): 2, ("loc_mid", "sku_b"): 2}
    decision = route("ship", [Line("sku_a", 1), Line("sku_b", 1)], [NEAR, MID], stock, destination=CUSTOMER)
    assert [a.location_id for a in decision.allocations] == ["loc_mid"]
    near = next(c for c in decision.candidates if c.location_id == "loc_near")
    assert "partial:sku_b" in near.excluded


def test_ship_splits_when_no_location_has_it_all_with_fewest_splits_and_nearest_first():
    stock = {("loc_near", "sku_a"): 3, ("loc_mid", "sku_a"): 3, ("loc_far", "sku_a"): 4}
    decision = route("ship", [Line("sku_a", 7)], [NEAR, MID, FAR], stock, destination=CUSTOMER)
    assert decision.strategy == "split"
    # Two locations suffice only with FAR (4) + one of the 3s; the nearer of those is NEAR.
    assert {a.location_id: a.lines for a in decision.allocations} == {
        "loc_near": (Line("sku_a", 3),), "loc_far": (Line("sku_a", 4),)}


def test_ship_split_is_bounded_and_otherwise_rejected_as_sold_out():
    stock = {("loc_near", "sku_a"): 1, ("loc_mid", "sku_a"): 1, ("loc_far", "sku_a"): 1}
    decision = route("ship", [Line("sku_a", 3)], [NEAR, MID, FAR], stock, destination=CUSTOMER, max_splits=2)
    assert not decision.accepted and decision.reason == "sold-out"
    assert route("ship", [Line("sku_a", 3)], [NEAR, MID, FAR], stock, destination=CUSTOMER,
                 max_splits=3).strategy == "split"


def test_safety_stock_is_held_back_from_online_but_not_from_in_store_sales():
    guarded = Site("loc_near", "store", NEAR.lat, NEAR.lng, daily_capacity=10, safety_stock=2)
    stock = {("loc_near", "sku_a"): 3, ("loc_mid", "sku_a"): 5}
    ship = route("ship", [Line("sku_a", 2)], [guarded, MID], stock, destination=CUSTOMER)
    assert [a.location_id for a in ship.allocations] == ["loc_mid"]
    near = next(c for c in ship.candidates if c.location_id == "loc_near")
    assert near.sellable == {"sku_a": 1} and "partial:sku_a" in near.excluded

    pickup = route("pickup", [Line("sku_a", 2)], [guarded, MID], stock, location_id="loc_near")
    assert not pickup.accepted and pickup.reason == "sold-out"
    assert pickup.nearest[0]["location_id"] == "loc_mid"

    in_store = route("in_store", [Line("sku_a", 3)], [guarded, MID], stock, location_id="loc_near")
    assert in_store.accepted and in_store.allocations[0].location_id == "loc_near"


def test_capacity_full_location_is_skipped_for_the_next_closest():
    stock = {("loc_near", "sku_a"): 5, ("loc_mid", "sku_a"): 5}
    decision = route("ship", [Line("sku_a", 1)], [NEAR, MID], stock, destination=CUSTOMER,
                     capacity_used={"loc_near": 10})
    assert [a.location_id for a in decision.allocations] == ["loc_mid"]
    assert "capacity-full" in next(c for c in decision.candidates if c.location_id == "loc_near").excluded


def test_locations_that_do_not_ship_or_sell_online_are_excluded_with_reasons():
    no_ship = Site("loc_near", "store", NEAR.lat, NEAR.lng, ship=False)
    offline = Site("loc_mid", "store", MID.lat, MID.lng, sell_online=False, daily_capacity=5)
    stock = {("loc_near", "sku_a"): 5, ("loc_mid", "sku_a"): 5, ("loc_wh", "sku_a"): 5}
    decision = route("ship", [Line("sku_a", 1)], [no_ship, offline, WAREHOUSE], stock, destination=CUSTOMER)
    assert [a.location_id for a in decision.allocations] == ["loc_wh"]
    reasons = {c.location_id: c.excluded for c in decision.candidates}
    assert "no-ship" in reasons["loc_near"] and "not-selling-online" in reasons["loc_mid"]


def test_explanation_lists_candidates_nearest_first_with_distances_and_the_choice():
    stock = {("loc_near", "sku_a"): 0, ("loc_mid", "sku_a"): 5, ("loc_far", "sku_a"): 5}
    explanation = route("ship", [Line("sku_a", 1)], [FAR, NEAR, MID], stock, destination=CUSTOMER).explain()
    assert explanation["strategy"] == "single_location" and explanation["chosen"] == ["loc_mid"]
    assert [c["location_id"] for c in explanation["candidates"]] == ["loc_near", "loc_mid", "loc_far"]
    distances = [c["distance_m"] for c in explanation["candidates"]]
    assert distances == sorted(distances) and all(d > 0 for d in distances)
    assert explanation["candidates"][0]["excluded"] == ["no-stock"]


def test_pickup_at_a_store_without_pickup_is_rejected_with_nearest_alternatives():
    no_pickup = Site("loc_near", "store", NEAR.lat, NEAR.lng, pickup=False)
    stock = {("loc_near", "sku_a"): 5, ("loc_mid", "sku_a"): 5, ("loc_far", "sku_a"): 5, ("loc_wh", "sku_a"): 9}
    decision = route("pickup", [Line("sku_a", 1)], [no_pickup, FAR, MID, WAREHOUSE], stock, location_id="loc_near")
    assert not decision.accepted and decision.reason == "location-cannot-serve"
    assert [n["location_id"] for n in decision.nearest] == ["loc_mid", "loc_far"]  # no warehouse: not a store


def test_repeated_skus_are_merged_and_unknown_store_is_rejected():
    stock = {("loc_near", "sku_a"): 3}
    assert not route("ship", [Line("sku_a", 2), Line("sku_a", 2)], [NEAR], stock, destination=CUSTOMER).accepted
    assert route("in_store", [Line("sku_a", 1)], [NEAR], stock, location_id="loc_nope").reason == "unknown-location"


def test_opening_hours_with_wrap_past_midnight_and_unknown_hours():
    from services.stock.domain.routing import is_open
    assert is_open("10:00-22:00", 10 * 60) and not is_open("10:00-22:00", 22 * 60)
    assert is_open("00:00-24:00", 0) and is_open("00:00-24:00", 23 * 60 + 59)
    assert is_open("22:00-02:00", 23 * 60) and is_open("22:00-02:00", 60) and not is_open("22:00-02:00", 12 * 60)
    assert is_open("", 600) is None and is_open("sometimes", 600) is None


def test_a_warehouse_is_never_a_pickup_or_in_store_location():
    stock = {("loc_wh", "sku_a"): 9, ("loc_near", "sku_a"): 1}
    for mode in ("pickup", "in_store"):
        decision = route(mode, [Line("sku_a", 1)], [WAREHOUSE, NEAR], stock, location_id="loc_wh")
        assert not decision.accepted and "not-a-store" in decision.candidates[0].excluded
        assert decision.reason == "location-cannot-serve"
        assert [n["location_id"] for n in decision.nearest] == ["loc_near"]
