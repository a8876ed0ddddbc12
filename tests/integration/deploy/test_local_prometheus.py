"""The local Prometheus (`make run` starts it when Debian's `prometheus` is installed) loads the committed
scrape config and alert rules, scrapes a running service, and evaluates the rules."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support import eventually, free_port, running_app, settings_for

ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus is not installed (Debian: apt-get install -y prometheus)")


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


async def test_local_prometheus_scrapes_the_suite_and_loads_every_alert(tmp_path, mongo_url, bus_namespace):
    from services.catalog.app import create_app
    from services.catalog.settings import CatalogSettings

    settings = settings_for(CatalogSettings, mongo_url, bus_namespace)
    # The committed local config, discovering targets from this test's own file (as make run writes it),
    # which names catalog on the port this test's catalog listens on.
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.local.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    o2o = next(job for job in config["scrape_configs"] if job["job_name"] == "o2o")
    (tmp_path / "targets.json").write_text(json.dumps(
        [{"targets": [f"127.0.0.1:{settings.port}"], "labels": {"service": "catalog", "replica": "1"}}]))
    o2o["file_sd_configs"] = [{"files": [str(tmp_path / "targets.json")], "refresh_interval": "1s"}]
    config["rule_files"] = [str(PROMETHEUS_DIR / rule) for rule in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))

    port = free_port()
    process = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        async with running_app(create_app(settings), settings.port):

            def ready():
                try:
                    return get_json(f"{api}/status/runtimeinfo")["status"] == "success"
                except OSError:
                    return False

            await eventually(ready, timeout=60)
            rules = get_json(f"{api}/rules")["data"]["groups"]
            alerts = {rule["name"] for group in rules for rule in group["rules"]}
            expected = {rule["alert"] for group in yaml.safe_load(
                (PROMETHEUS_DIR / "rules" / "o2o-alerts.yml").read_text())["groups"] for rule in group["rules"]}
            assert alerts == expected

            def catalog_is_up():
                result = get_json(f"{api}/query?query=up%7Bjob%3D%22o2o%22%2Cservice%3D%22catalog%22%7D")
                values = [float(r["value"][1]) for r in result["data"]["result"]]
                return values == [1.0]

            await eventually(catalog_is_up, timeout=60)
            # Series of the kit come with the service label, as the rules and dashboards expect.
            query = urllib.parse.quote(f'o2o_bus_connected{{service="catalog",instance="127.0.0.1:{settings.port}"}}')
            result = get_json(f"{api}/query?query={query}")
            assert [float(r["value"][1]) for r in result["data"]["result"]] == [1.0]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
