"""Locally each service owns its database AND its nx launcher (scripts/suite.py): own port, pid, data dir, log.
The failure of one nx leaves the others serving. Services find theirs as <SERVICE>_MONGO_URL."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest
from pydantic_settings import SettingsConfigDict
from pymongo import MongoClient

from libs.settings import ServiceSettings
from tests.support import free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))
from suite import DB_SERVICES, SERVICES, Suite, pid_alive  # noqa: E402


class _OwnDbSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="OWNDB_", extra="ignore", populate_by_name=True)
    service_name: str = "owndb"


class _OtherSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="OTHERDB_", extra="ignore", populate_by_name=True)
    service_name: str = "otherdb"


def test_a_service_reads_its_own_mongo_url_before_the_shared_one(monkeypatch):
    monkeypatch.setenv("MONGO_URL", "mongodb://one-server/")
    assert _OwnDbSettings().mongo_url == "mongodb://one-server/"
    monkeypatch.setenv("OWNDB_MONGO_URL", "mongodb://own/")
    assert _OwnDbSettings().mongo_url == "mongodb://own/"
    assert _OtherSettings().mongo_url == "mongodb://one-server/"
    assert _OwnDbSettings(mongo_url="mongodb://explicit/").mongo_url == "mongodb://explicit/"
    monkeypatch.delenv("MONGO_URL")
    assert _OwnDbSettings().mongo_url == "mongodb://own/"


def test_an_external_mongo_url_is_used_unchanged_and_starts_no_nx():
    suite = Suite(state_dir=Path(tempfile.mkdtemp(prefix="o2o-nx-ext-")), mongo_url="mongodb://db1,db2/?replicaSet=rs0")
    try:
        suite.start_mongo()
        for service in DB_SERVICES:
            env = suite.env(service)
            assert env["MONGO_URL"] == "mongodb://db1,db2/?replicaSet=rs0"
            assert f"{service.upper()}_MONGO_URL" not in env
        assert not any(name.startswith("nx-") for name in suite.status())
    finally:
        shutil.rmtree(suite.state_dir, ignore_errors=True)


@pytest.fixture
def nx_suite():
    suite = Suite(state_dir=Path(tempfile.mkdtemp(prefix="o2o-nx-suite-")), ports={s: free_port() for s in SERVICES},
                  nx_port=free_port(), db_prefix="o2o_nxsuite_")
    suite.logs.mkdir(parents=True)
    suite.pids.mkdir(parents=True)
    yield suite
    suite.stop()
    shutil.rmtree(suite.state_dir, ignore_errors=True)


def test_one_nx_per_service_database_and_one_failing_leaves_the_others_serving(nx_suite):
    suite = nx_suite
    suite.start_mongo()
    pids = {service: suite.pid_of(f"nx-{service}") for service in DB_SERVICES}
    assert all(pids.values()) and len(set(pids.values())) == len(DB_SERVICES)
    assert len({suite.nx_port_of(service) for service in DB_SERVICES}) == len(DB_SERVICES)
    for service in DB_SERVICES:
        env = suite.env(service)
        assert env["MONGO_URL"] == env[f"{service.upper()}_MONGO_URL"] == suite.mongo_url_of(service)
        assert (suite.logs / f"nx-{service}.log").exists()
        assert suite.status()[f"nx-{service}"].startswith("running")
    assert "MONGO_URL" not in suite.env("gateway")

    with MongoClient(suite.mongo_url_of("catalog")) as catalog, MongoClient(suite.mongo_url_of("stock")) as stock:
        catalog["o2o_nxsuite_catalog"]["things"].insert_one({"_id": "only-in-catalog"})
        assert stock["o2o_nxsuite_catalog"]["things"].find_one({"_id": "only-in-catalog"}) is None
        assert (suite.nx_data_dir("catalog") / "o2o_nxsuite_catalog.db").exists()

        os.killpg(pids["catalog"], signal.SIGKILL)  # one database server dies
        suite.kill("nx-catalog")                    # reap it
        assert not pid_alive(pids["catalog"])
        with MongoClient(suite.mongo_url_of("orders"), serverSelectionTimeoutMS=30000) as orders:
            with orders.start_session() as session:
                session.with_transaction(
                    lambda s: orders["o2o_nxsuite_orders"]["things"].insert_one({"_id": "still-serving"}, session=s))
            assert orders["o2o_nxsuite_orders"]["things"].find_one({"_id": "still-serving"})
        assert stock.admin.command("ping")["ok"] == 1
        assert suite.status()["nx-catalog"].startswith("stopped")

        suite.start_mongo()  # only the dead one is started again, on its data
        assert suite.pid_of("nx-stock") == pids["stock"]
    with MongoClient(suite.mongo_url_of("catalog"), serverSelectionTimeoutMS=30000) as catalog:
        assert catalog["o2o_nxsuite_catalog"]["things"].find_one({"_id": "only-in-catalog"})

    suite.stop()
    assert not any(pid_alive(pid) for pid in pids.values())
    assert all(suite.pid_of(f"nx-{service}") is None for service in DB_SERVICES)
