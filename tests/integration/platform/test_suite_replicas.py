"""scripts/suite.py with replicas: each replica its own port, process name (pid file, log) and port setting;
every service URL lists all replicas; only the first replica loads the demo data. (The processes themselves are
started by tests/e2e/test_replicas.py.)"""
from __future__ import annotations

import sys
from pathlib import Path

from libs.replicas import split_urls
from services.gateway.settings import GatewaySettings
from services.orders.settings import OrdersSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
from suite import DEFAULT_PORTS, SERVICES, Suite  # noqa: E402


def test_make_run_replicas_take_the_next_hundred(tmp_path):
    suite = Suite(state_dir=tmp_path, replicas=2)
    assert suite.ports_of("gateway") == [8080, 8180] and suite.ports_of("orders") == [8083, 8183]
    assert suite.instances("orders") == ["orders", "orders-2"]
    assert suite.parse_instance("orders-2") == ("orders", 2) and suite.parse_instance("nx-orders") == ("nx-orders", 1)


def test_private_suites_get_distinct_free_ports(tmp_path):
    suite = Suite(state_dir=tmp_path, ports={s: 20000 + i for i, s in enumerate(SERVICES)}, replicas=3)
    ports = [port for service in SERVICES for port in suite.ports_of(service)]
    assert len(ports) == len(set(ports)) == 3 * len(SERVICES)


def test_each_replica_listens_on_its_own_port_and_calls_every_replica(tmp_path, monkeypatch):
    suite = Suite(state_dir=tmp_path, replicas=2)
    first, second = suite.env("orders", 1), suite.env("orders", 2)
    assert (first["ORDERS_PORT"], second["ORDERS_PORT"]) == ("8083", "8183")
    assert second["STOCK_PORT"] == str(DEFAULT_PORTS["stock"])  # another service's port: its first replica
    assert first["O2O_DEMO_DATA"] == "true" and second["O2O_DEMO_DATA"] == "false"
    assert first["ORDERS_MONGO_URL"] == second["ORDERS_MONGO_URL"]  # one database (one nx) per service
    for name, value in second.items():  # what the processes read from it
        monkeypatch.setenv(name, value)
    assert split_urls(OrdersSettings().stock_url) == ["http://127.0.0.1:8082", "http://127.0.0.1:8182"]
    assert GatewaySettings().upstreams()["membership"] == ["http://127.0.0.1:8084", "http://127.0.0.1:8184"]
    assert split_urls(second["O2O_JWKS_URL"]) == ["http://127.0.0.1:8084/auth/jwks", "http://127.0.0.1:8184/auth/jwks"]


def test_one_replica_is_the_suite_as_before(tmp_path):
    suite = Suite(state_dir=tmp_path)
    env = suite.env("orders")
    assert env["STOCK_URL"] == "http://127.0.0.1:8082" and env["O2O_JWKS_URL"] == "http://127.0.0.1:8084/auth/jwks"
    assert suite.instances("gateway") == ["gateway"] and suite.urls("gateway") == ["http://127.0.0.1:8080"]


def test_the_replica_count_is_read_back_from_the_pid_files(tmp_path):
    suite = Suite(state_dir=tmp_path)
    suite.pids.mkdir(parents=True)
    assert suite.started_replicas() == 1
    for name in ("orders", "orders-2", "gateway-3", "nx-orders", "prometheus"):
        (suite.pids / f"{name}.pid").write_text("1")
    assert suite.started_replicas() == 3
