"""docker-compose.yml validates against the Compose Specification schema and runs the whole suite properly."""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_PATH = ROOT / "docker-compose.yml"
SCHEMA_PATH = ROOT / "deploy" / "schemas" / "compose-spec.json"
COMPOSE = yaml.safe_load(COMPOSE_PATH.read_text())  # PyYAML resolves the x-* anchors and `<<` merges
SERVICES = {"gateway": 8080, "catalog": 8081, "stock": 8082, "orders": 8083, "membership": 8084,
            "notifications": 8085, "settlement": 8086}


def schema_errors(document: dict) -> list[str]:
    validator = Draft7Validator(json.loads(SCHEMA_PATH.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_validates_against_the_compose_spec_schema():
    assert schema_errors(COMPOSE) == []


def test_check_jsonschema_cli_accepts_the_compose_file():
    """The same check with check-jsonschema, as a person would run it (no network: vendored schema)."""
    cli = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(cli), "--schemafile", str(SCHEMA_PATH), str(COMPOSE_PATH)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_rejects_a_broken_compose_file():
    broken = json.loads(json.dumps(COMPOSE))
    broken["services"]["gateway"]["ports"] = "8080:8080"      # must be a list
    broken["services"]["catalog"]["restart_policy"] = "always"  # not a service key
    assert len(schema_errors(broken)) >= 2


@pytest.mark.parametrize("service,port", sorted(SERVICES.items()))
def test_every_service_runs_from_the_one_image_in_production_mode(service, port):
    spec = COMPOSE["services"][service]
    assert spec["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
    assert spec["command"] == ["python", "-m", f"services.{service}"]
    env = spec["environment"]
    assert env["O2O_DEV_MODE"] == "false"
    assert env[f"{service.upper()}_HOST"] == "0.0.0.0"
    assert env[f"{service.upper()}_PORT"] == str(port)
    assert "replicaSet=rs0" in env["MONGO_URL"]
    assert "@rabbitmq:5672" in env["AMQP_URL"]
    assert f"127.0.0.1:{port}/readyz" in " ".join(spec["healthcheck"]["test"])
    assert (ROOT / "services" / service).is_dir(), f"services/{service} is missing"


def test_secrets_have_no_defaults():
    text = COMPOSE_PATH.read_text()
    for variable in ("ORDERS_CLIENT_SECRET", "NOTIFICATIONS_CLIENT_SECRET", "ORDERS_PICKUP_CODE_SECRET",
                     "ORDERS_PAYMENT_WEBHOOK_SECRET", "MEMBERSHIP_OTP_PEPPER", "MEMBERSHIP_SIGNING_KEY_PASSPHRASE",
                     "MONGO_PASSWORD", "RABBITMQ_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        uses = re.findall(r"\$\{" + variable + r"([^}]*)\}", text)
        assert uses and all(use.startswith(":?") for use in uses), variable
    assert "dev-service-secret" not in text and "change-me" not in text and "O2O_SERVICE_CLIENT_SECRET" not in text


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_service_is_given_every_secret_its_settings_require(service):
    """What each service refuses to start without (its settings class says) is set, with no default, in its
    own environment: compose refuses to start without each one."""
    module = importlib.import_module(f"services.{service}.settings")
    settings = next(getattr(module, name) for name in dir(module) if name.lower() == f"{service}settings")
    env = COMPOSE["services"][service]["environment"]
    for variable in settings.secret_variables().values():
        assert env.get(variable) == f"${{{variable}:?set {variable}}}", (service, variable)


def test_mongo_requires_authentication():
    mongo = COMPOSE["services"]["mongo"]
    assert "--auth" in mongo["command"] and "--keyFile" in mongo["command"]
    assert mongo["environment"]["MONGO_INITDB_ROOT_PASSWORD"] == "${MONGO_PASSWORD:?set MONGO_PASSWORD}"
    assert "--password" in COMPOSE["services"]["mongo-init"]["command"]
    for service in SERVICES:
        assert COMPOSE["services"][service]["environment"]["MONGO_URL"].startswith(
            "mongodb://o2o:${MONGO_PASSWORD:?set MONGO_PASSWORD}@mongo:27017/")


def test_mongo_is_a_replica_set_initiated_before_the_services_start():
    assert "--replSet" in COMPOSE["services"]["mongo"]["command"]
    init = COMPOSE["services"]["mongo-init"]
    script = " ".join(init["command"])
    assert "rs.initiate" in script and "isWritablePrimary" in script
    assert init["depends_on"]["mongo"]["condition"] == "service_healthy"
    for service in SERVICES:
        depends = COMPOSE["services"][service]["depends_on"]
        if service != "gateway":
            assert depends["mongo-init"]["condition"] == "service_completed_successfully"
            assert depends["rabbitmq"]["condition"] == "service_healthy"


def test_rabbitmq_has_management_and_the_prometheus_plugin():
    rabbit = COMPOSE["services"]["rabbitmq"]
    assert "management" in rabbit["image"]
    plugins = COMPOSE["configs"][rabbit["configs"][0]["source"]]["content"]
    assert "rabbitmq_prometheus" in plugins and "rabbitmq_management" in plugins
    assert rabbit["configs"][0]["target"] == "/etc/rabbitmq/enabled_plugins"


def test_prometheus_and_grafana_mount_the_committed_configuration():
    prometheus = COMPOSE["services"]["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.compose.yml:/etc/prometheus/prometheus.yml:ro" in prometheus
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in prometheus
    grafana = COMPOSE["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana
    # The scrape targets are the compose service names on the services' ports.
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.compose.yml").read_text())["scrape_configs"]
    targets = {t for job in scrape for group in job["static_configs"] for t in group["targets"]}
    scraped = {**SERVICES, "gateway": 9080}  # the gateway's internal listener, not its API port
    assert {f"{s}:{p}" for s, p in scraped.items()} | {"rabbitmq:15692"} <= targets
    for target in targets:
        assert target.split(":")[0] in COMPOSE["services"], target


def test_only_the_gateway_publishes_an_api_port():
    for service in SERVICES:
        assert ("ports" in COMPOSE["services"][service]) == (service == "gateway"), service


def test_dockerfile_builds_one_unprivileged_image_for_every_service():
    lines = [line.strip() for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    instructions = [line.split()[0] for line in lines if line.split()[0].isupper()]
    assert instructions[0] == "FROM"
    assert "COPY requirements.txt ./" in lines and "RUN pip install --no-compile -r requirements.txt" in lines
    assert {"COPY libs/ libs/", "COPY services/ services/"} <= set(lines)
    assert any(line.startswith("USER ") and not line.startswith("USER root") for line in lines)
    assert lines[-1] == 'CMD ["python", "-m", "services.gateway"]'
    assert "O2O_DEV_MODE=false" in (ROOT / "deploy" / "Dockerfile").read_text()
    # Every COPY source exists in the repository (the build context is the repo root).
    for line in lines:
        if line.startswith("COPY "):
            source = line.split()[1]
            assert (ROOT / source).exists(), source


def test_build_context_filter_keeps_every_copied_path():
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {line.split()[1].rstrip("/") for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
              if line.startswith("COPY ")}
    assert "*" in ignore and copied <= kept
