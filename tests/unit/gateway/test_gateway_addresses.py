"""Client addresses behind trusted proxies, bucket keys (IPv6 by /64), and which buckets a login spends."""
from libs.principal import Principal
from services.gateway.addresses import address_key, client_address, parse_networks
from services.gateway.limits import Take, login_target, takes
from services.gateway.policy import LimitClass

PROXIES = parse_networks(["10.0.0.0/8", "fd00::/8"])


def test_forwarded_for_is_believed_only_from_a_trusted_peer():
    assert client_address("203.0.113.9", "1.2.3.4", PROXIES) == "203.0.113.9"
    assert client_address("10.1.2.3", "1.2.3.4", PROXIES) == "1.2.3.4"
    assert client_address("10.1.2.3", None, PROXIES) == "10.1.2.3"
    assert client_address("10.1.2.3", "1.2.3.4", ()) == "10.1.2.3"


def test_the_rightmost_untrusted_hop_is_the_client_and_spoofed_entries_left_of_it_are_ignored():
    assert client_address("10.0.0.5", "6.6.6.6, 198.51.100.7, 10.0.0.9", PROXIES) == "198.51.100.7"
    assert client_address("10.0.0.5", "garbage, 10.0.0.9", PROXIES) == "10.0.0.9"
    assert client_address("10.0.0.5", "[2001:db8::1]:443", PROXIES) == "2001:db8::1"
    assert client_address("::ffff:10.0.0.5", "198.51.100.8", PROXIES) == "198.51.100.8"


def test_ipv6_addresses_are_keyed_by_their_64():
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("198.51.100.7") == "198.51.100.7"


def test_login_targets_are_read_from_the_body_as_membership_reads_them():
    assert login_target(LimitClass.OTP_LOGIN, b'{"phone": "+86 138-0000-0000", "code": "1"}') == "+8613800000000"
    assert login_target(LimitClass.STAFF_LOGIN, b'{"username": " a.b ", "password": "x"}') == "a.b"
    assert login_target(LimitClass.STAFF_LOGIN, b"[[[[") is None
    assert login_target(LimitClass.STAFF_LOGIN, b'{"username": 5}') is None
    assert login_target(LimitClass.DEFAULT, b'{"username": "a"}') is None


def test_buckets_per_class():
    assert takes(LimitClass.STAFF_LOGIN, address="1.2.3.4", principal=None, params={}, target="a.b") == [
        Take("login_ip", "1.2.3.4"), Take("login_pair", "staff|1.2.3.4|a.b"), Take("login_target", "staff|a.b")]
    assert takes(LimitClass.OTP_SEND, address="1.2.3.4", principal=None, params={}, target=None) == [
        Take("login_ip", "1.2.3.4")]
    staff = Principal("stf_1", frozenset({"store_staff"}), staff_id="stf_1", store_ids=frozenset({"loc_2", "loc_1"}))
    assert takes(LimitClass.PICKUP, address="1.2.3.4", principal=staff, params={"order_id": "ord_1"}, target=None) == [
        Take("pickup_order", "ord_1"), Take("pickup_store", "loc_1,loc_2")]
    assert takes(LimitClass.DEFAULT, address="1.2.3.4", principal=staff, params={}, target=None) == []
