from libs.principal import Principal
from services.orders.domain.access import can_see, is_owner, works_at_order_store

ORDER = {"_id": "ord_1", "member_id": "mbr_a", "store_ids": ["loc_a", "loc_w"]}


def principal(roles, **kw):
    return Principal(subject=kw.get("member_id") or kw.get("staff_id") or "x", roles=frozenset(roles),
                     member_id=kw.get("member_id"), staff_id=kw.get("staff_id"),
                     store_ids=frozenset(kw.get("store_ids", ())), franchisee_id=kw.get("franchisee_id"))


def test_members_see_only_their_own_orders():
    assert can_see(principal(["customer"], member_id="mbr_a"), ORDER)
    assert is_owner(principal(["customer"], member_id="mbr_a"), ORDER)
    assert not can_see(principal(["customer"], member_id="mbr_b"), ORDER)
    assert not can_see(principal(["customer"]), {**ORDER, "member_id": None})  # a guest order is nobody's


def test_staff_see_and_act_on_their_stores_orders_only():
    mine = principal(["store_staff"], staff_id="s1", store_ids=["loc_w"])
    other = principal(["store_manager"], staff_id="s2", store_ids=["loc_z"])
    assert can_see(mine, ORDER) and works_at_order_store(mine, ORDER)
    assert not can_see(other, ORDER) and not works_at_order_store(other, ORDER)


def test_franchisee_owners_see_but_do_not_operate():
    owner = principal(["franchisee"], staff_id="f1", store_ids=["loc_a"], franchisee_id="frn_1")
    assert can_see(owner, ORDER)
    assert not works_at_order_store(owner, ORDER)


def test_hq_sees_everything_and_a_service_is_no_administrator():
    assert can_see(principal(["hq_admin"], staff_id="hq"), ORDER)
    # A service token (whatever its scopes) neither sees nor operates orders as a person would.
    service = principal(["service"])
    assert not service.is_admin
    assert not can_see(service, ORDER) and not works_at_order_store(service, ORDER)
