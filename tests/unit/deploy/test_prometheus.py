"""Prometheus configuration and alert rules: promtool accepts them and the rule unit tests pass."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
CONFIGS = sorted(PROMETHEUS.glob("prometheus.*.yml"))
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.test.yml"))
SERVICES = {"gateway": 8080, "catalog": 8081, "stock": 8082, "orders": 8083, "membership": 8084,
            "notifications": 8085, "settlement": 8086}
# The gateway's metrics are on its internal listener (GATEWAY_METRICS_PORT), never on the API port.
SCRAPE_PORTS = {**SERVICES, "gateway": 9080}

promtool_required = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian: apt-get install -y prometheus)")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS)


@promtool_required
@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_promtool_accepts_the_scrape_config(config):
    result = promtool("check", "config", str(config))
    if result.returncode != 0 and "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds Prometheus without Kubernetes service discovery; upstream promtool has it.
        pytest.skip(f"this promtool build has no kubernetes_sd_configs, needed by {config.name}")
    assert result.returncode == 0, result.stdout + result.stderr


@promtool_required
def test_promtool_accepts_the_alert_rules():
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@promtool_required
def test_alert_rule_unit_tests_pass():
    result = promtool("test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


@promtool_required
def test_promtool_rejects_a_broken_rule(tmp_path):
    """The checks above can fail: a rule with a bad expression is refused."""
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n- name: x\n  rules:\n  - alert: Broken\n    expr: sum by (service (up)\n")
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_every_alert_has_a_unit_test():
    alerts = {rule["alert"] for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    tested = {case["alertname"] for path in RULE_TESTS for test in yaml.safe_load(path.read_text())["tests"]
              for case in test.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alerts - tested == set(), "alerts without a firing unit test"


def test_every_alert_has_severity_summary_and_description():
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
                    assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_compose_scrape_config_names_every_service_on_its_port():
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.compose.yml").read_text())["scrape_configs"]
    o2o = next(job for job in scrape if job["job_name"] == "o2o")
    targets = {group["labels"]["service"]: group["targets"] for group in o2o["static_configs"]}
    assert targets == {service: [f"{service}:{port}"] for service, port in SCRAPE_PORTS.items()}
    assert {"rabbitmq", "o2o"} <= {job["job_name"] for job in scrape}


def test_local_scrape_config_discovers_every_replica_that_make_run_started(tmp_path):
    # make run writes one target group per process; the committed config reads them from .state.
    sys.path.insert(0, str(PROMETHEUS.parents[1] / "scripts"))
    from suite import Suite

    scrape = yaml.safe_load((PROMETHEUS / "prometheus.local.yml").read_text())["scrape_configs"]
    o2o = next(job for job in scrape if job["job_name"] == "o2o")
    [discovery] = o2o["file_sd_configs"]
    assert (PROMETHEUS / discovery["files"][0]).resolve().parent == (PROMETHEUS.parents[1] / ".state/prometheus/targets")

    written = Suite(state_dir=tmp_path, replicas=2).write_scrape_targets()
    assert written.parent == tmp_path / "prometheus" / "targets"
    groups = json.loads(written.read_text())
    found = {(g["labels"]["service"], g["labels"]["replica"]): g["targets"] for g in groups}
    expected = {}
    for service, port in SCRAPE_PORTS.items():
        expected[(service, "1")] = [f"127.0.0.1:{port}"]
        expected[(service, "2")] = [f"127.0.0.1:{port + 100}"]
    assert found == expected


def test_readme_lists_every_alert():
    readme = (PROMETHEUS / "README.md").read_text()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    assert f"| `{rule['alert']}` | {rule['labels']['severity']} |" in readme, rule["alert"]


amtool_required = pytest.mark.skipif(
    shutil.which("amtool") is None,
    reason="amtool is not installed (Debian: apt-get install -y prometheus-alertmanager)")


@amtool_required
def test_amtool_accepts_the_alertmanager_config():
    result = subprocess.run(["amtool", "check-config", str(PROMETHEUS / "alertmanager.yml")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@amtool_required
@pytest.mark.parametrize("labels,receiver", [
    (["severity=critical", "alertname=O2OServiceDown", "service=orders"], "sre-pager"),
    (["severity=warning", "alertname=O2OConsumerLag", "queue=stock.events"], "sre"),
    (["severity=warning", "alertname=O2OReconciliationDiscrepancies"], "finance"),
])
def test_alerts_are_routed_to_the_right_receiver(labels, receiver):
    result = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={PROMETHEUS / 'alertmanager.yml'}",
                             *labels], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == receiver, result.stdout + result.stderr


def test_compose_prometheus_sends_alerts_to_the_compose_alertmanager():
    config = yaml.safe_load((PROMETHEUS / "prometheus.compose.yml").read_text())
    targets = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert targets == ["alertmanager:9093"]
