"""Grafana provisioning and dashboards: generated, well-formed, valid PromQL, metric names with an owner."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
GRAFANA = ROOT / "deploy" / "grafana"


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dashboards = _load(GRAFANA / "dashboards.py", "o2o_grafana_dashboards")
KIT_METRICS = set(re.findall(r'"(o2o_[a-z0-9_]+)"', (ROOT / "libs" / "metrics.py").read_text()))
SERVICES = ("gateway", "catalog", "stock", "orders", "membership", "notifications", "settlement")


def test_committed_dashboards_are_up_to_date_with_the_generator():
    assert dashboards.main(["--check"]) == 0, "run `.venv/bin/python deploy/grafana/dashboards.py` and commit"


def test_the_four_dashboards_exist_with_unique_uids_and_panel_ids():
    boards = [dashboards.json.loads((dashboards.OUT / name).read_text()) for name in dashboards.BOARDS]
    assert {b["uid"] for b in boards} == {"o2o-overview", "o2o-service-red", "o2o-bus", "o2o-business"}
    for board in boards:
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (board["uid"], panel["title"])
            if panel["type"] != "row":
                assert panel["targets"], (board["uid"], panel["title"])


def test_every_target_uses_the_provisioned_datasource():
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"]}
    for name in dashboards.BOARDS:
        board = dashboards.json.loads((dashboards.OUT / name).read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] in uids, (name, panel["title"])


def test_dashboard_provider_points_at_the_mounted_folder():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "o2o.yml").read_text())["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_o2o_metric_used_is_a_kit_metric_or_owned_by_a_service():
    """A name that is neither in libs/metrics.py nor prefixed by a service would be checked by nobody."""
    orphans = {}
    for name, where in dashboards.used_o2o_metrics().items():
        families = dashboards.metric_families(name)
        if families & KIT_METRICS:
            continue
        if any(name.startswith(f"o2o_{service}_") for service in SERVICES):
            continue
        orphans[name] = sorted(where)
    assert orphans == {}


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool is not installed (Debian: apt-get install -y prometheus)")
def test_every_dashboard_query_is_valid_promql(tmp_path):
    """promtool parses each dashboard expression as a recording rule (Grafana variables substituted)."""
    queries = dashboards.dashboard_queries()
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)]}]}
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(queries)} rules found" in result.stdout
