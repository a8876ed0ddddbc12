"""Properties of routing over random stock pictures: never more than sellable, always the whole order."""
from hypothesis import given, settings, strategies as st

from services.stock.domain.routing import Line, Point, Site, route

SITES = [Site(f"loc_{i}", "store", 31.2 + i * 0.01, 121.4 + (i % 3) * 0.02, daily_capacity=5,
              safety_stock=i % 3) for i in range(6)]
SKUS = ["sku_a", "sku_b", "sku_c"]

stock_pictures = st.dictionaries(st.tuples(st.sampled_from([s.id for s in SITES]), st.sampled_from(SKUS)),
                                 st.integers(0, 8))
orders = st.lists(st.builds(Line, st.sampled_from(SKUS), st.integers(1, 10)), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(stock=stock_pictures, lines=orders, used=st.dictionaries(st.sampled_from([s.id for s in SITES]),
                                                                 st.integers(0, 6)), max_splits=st.integers(1, 4))
def test_ship_allocations_cover_the_order_within_sellable_capacity_and_split_bound(stock, lines, used, max_splits):
    decision = route("ship", lines, SITES, stock, capacity_used=used, destination=Point(31.2, 121.4),
                     max_splits=max_splits)
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[line.sku_id] = wanted.get(line.sku_id, 0) + line.qty
    sites = {s.id: s for s in SITES}
    if not decision.accepted:
        assert decision.reason == "sold-out" and decision.strategy == "rejected"
        # Rejected only when even all eligible locations together could not cover it, or the split bound hit.
        return
    assert len(decision.allocations) <= max(1, max_splits)
    got: dict[str, int] = {}
    for allocation in decision.allocations:
        site = sites[allocation.location_id]
        assert used.get(site.id, 0) < site.daily_capacity  # capacity left today
        for line in allocation.lines:
            assert line.qty > 0
            assert line.qty <= stock.get((site.id, line.sku_id), 0) - site.safety_stock  # safety stock kept
            got[line.sku_id] = got.get(line.sku_id, 0) + line.qty
    assert got == wanted
    assert decision.explain()["chosen"] == [a.location_id for a in decision.allocations]


@settings(max_examples=100, deadline=None)
@given(stock=stock_pictures, lines=orders)
def test_a_ship_order_that_one_eligible_location_can_serve_is_never_split(stock, lines):
    decision = route("ship", lines, SITES, stock, destination=Point(31.2, 121.4))
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[line.sku_id] = wanted.get(line.sku_id, 0) + line.qty
    single = [s for s in SITES if all(stock.get((s.id, k), 0) - s.safety_stock >= q for k, q in wanted.items())]
    if single:
        assert decision.strategy == "single_location" and len(decision.allocations) == 1
