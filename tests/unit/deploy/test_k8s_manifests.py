"""deploy/k8s: every overlay renders, every object validates against the Kubernetes API schemas
(kubernetes-validate, offline) or the vendored operator CRD schemas, and every service is deployed properly."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
SERVICES = {"gateway": 8080, "catalog": 8081, "stock": 8082, "orders": 8083, "membership": 8084,
            "notifications": 8085, "settlement": 8086}
# Where Prometheus scrapes: the gateway's metrics are on its internal listener only, never on the API port.
METRICS_PORTS = {**SERVICES, "gateway": 9080}
# The oldest Kubernetes minor we support and the newest the pinned kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CRD_SCHEMAS = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): ROOT / "deploy/schemas/crds/rabbitmqcluster-v1beta1.json",
    ("mongodbcommunity.mongodb.com/v1", "MongoDBCommunity"): ROOT / "deploy/schemas/crds/mongodbcommunity-v1.json",
}


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


kustomize = _load(Path(__file__).with_name("kustomize_lite.py"), "o2o_kustomize_lite")
generator = _load(K8S / "generate.py", "o2o_k8s_generate")
RENDERED = {overlay: kustomize.build(K8S / "overlays" / overlay) for overlay in OVERLAYS}


def schema_errors(obj: dict, version: str) -> list[str]:
    crd = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
    if crd is not None:
        validator = Draft7Validator(json.loads(crd.read_text()))
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.path))}: {exc.message}"]
    return []


def objects(overlay: str, kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in RENDERED[overlay] if o["kind"] == kind}


def test_base_manifests_are_up_to_date_with_the_generator():
    assert generator.main(["--check"]) == 0, "run `.venv/bin/python deploy/k8s/generate.py` and commit"


def test_there_are_dev_and_production_overlays():
    assert {"dev", "production"} <= set(OVERLAYS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_against_its_schema(overlay, version):
    failures = {f"{o['kind']}/{o['metadata']['name']}": errors
                for o in RENDERED[overlay] if (errors := schema_errors(o, version))}
    assert failures == {}


def test_every_manifest_file_validates_on_its_own():
    """Each YAML document under deploy/k8s (patches excepted) is a complete, valid object."""
    patch_files = {K8S / "overlays" / o / p["path"] for o in OVERLAYS
                   for p in yaml.safe_load((K8S / "overlays" / o / "kustomization.yaml").read_text()).get("patches", [])
                   if "path" in p}
    checked = 0
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml" or path in patch_files:
            continue
        for doc in kustomize.load_documents(path):
            assert schema_errors(doc, KUBERNETES_VERSIONS[-1]) == [], path
            checked += 1
    assert checked >= 7 * 4


def test_validation_catches_broken_objects():
    deployment = json.loads(json.dumps(objects("production", "Deployment")["orders"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = {"no": 1}
    deployment["spec"]["replicas"] = "three"
    assert len(schema_errors(deployment, KUBERNETES_VERSIONS[-1])) >= 1
    rabbit = json.loads(json.dumps(objects("production", "RabbitmqCluster")["o2o-rabbitmq"]))
    rabbit["spec"]["replica"] = 3  # typo of `replicas`
    assert schema_errors(rabbit, KUBERNETES_VERSIONS[-1]) != []


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_service_has_deployment_service_hpa_and_pdb_that_fit_together(overlay, service):
    deployment = objects(overlay, "Deployment")[service]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", f"services.{service}"]
    metrics = [{"name": "metrics", "containerPort": METRICS_PORTS[service], "protocol": "TCP"}] \
        if METRICS_PORTS[service] != SERVICES[service] else []
    assert container["ports"] == [{"name": "http", "containerPort": SERVICES[service], "protocol": "TCP"}, *metrics]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert container["envFrom"] == [{"configMapRef": {"name": "o2o-config"}}]  # no secret through envFrom
    env = {e["name"]: e for e in container["env"]}
    assert env[f"{service.upper()}_HOST"]["value"] == "0.0.0.0"
    if service != "gateway":
        assert "MONGO_URL" in env and "AMQP_URL" in env
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(METRICS_PORTS[service])

    svc = objects(overlay, "Service")[service]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"][0]["port"] == SERVICES[service]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"

    hpa = objects(overlay, "HorizontalPodAutoscaler")[service]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": service}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    pdb = objects(overlay, "PodDisruptionBudget")[service]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    namespace = deployment["metadata"]["namespace"]
    assert namespace in objects(overlay, "Namespace")
    assert all(o["metadata"].get("namespace") == namespace for o in RENDERED[overlay] if o["kind"] != "Namespace")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_never_turns_on_dev_mode_and_images_are_pinned_per_overlay(overlay):
    config = objects(overlay, "ConfigMap")["o2o-config"]["data"]
    assert config["O2O_DEV_MODE"] == "false"
    assert config["O2O_JWKS_URL"].startswith(f"http://membership:{SERVICES['membership']}/")
    for deployment in objects(overlay, "Deployment").values():
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert not image.endswith(":latest"), image


def test_production_scales_the_flash_sale_path_and_keeps_secrets_out_of_git():
    hpas = objects("production", "HorizontalPodAutoscaler")
    for service in ("gateway", "stock", "orders"):
        assert hpas[service]["spec"]["minReplicas"] >= 3
    assert objects("production", "Secret") == {}
    assert objects("production", "RabbitmqCluster")["o2o-rabbitmq"]["spec"]["replicas"] == 3
    assert objects("production", "MongoDBCommunity")["o2o-mongo"]["spec"]["members"] == 3


def test_dev_overlay_shrinks_everything_to_one_replica():
    assert {d["spec"]["replicas"] for d in objects("dev", "Deployment").values()} == {1}
    assert {h["spec"]["minReplicas"] for h in objects("dev", "HorizontalPodAutoscaler").values()} == {1}
    assert objects("dev", "RabbitmqCluster")["o2o-rabbitmq"]["spec"]["replicas"] == 1
    assert set(objects("dev", "Secret")) == {"o2o-secrets", "o2o-mongo-password"}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("service", sorted(SERVICES))
def test_each_secret_a_service_needs_is_its_own_required_secret_key_ref(overlay, service):
    """A key missing from the Secret keeps the pod from starting; nothing starts on a default."""
    container = objects(overlay, "Deployment")[service]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    needed = generator.secret_variables(service)
    for name in needed:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "o2o-secrets", "key": name}, (service, name)  # no `optional`
    optional = [name for name, e in env.items() if e.get("valueFrom", {}).get("secretKeyRef", {}).get("optional")]
    assert set(optional) <= {"NOTIFICATIONS_SMTP_USERNAME", "NOTIFICATIONS_SMTP_PASSWORD"}
    if overlay == "dev":  # the throwaway cluster's Secret has every key, so the dev cluster starts
        keys = set(objects("dev", "Secret")["o2o-secrets"]["data"])
        assert set(needed) <= keys, set(needed) - keys


def test_the_secrets_of_the_issue_are_all_injected():
    injected = {name for service in SERVICES for name in generator.secret_variables(service)}
    assert {"ORDERS_CLIENT_SECRET", "NOTIFICATIONS_CLIENT_SECRET", "ORDERS_PICKUP_CODE_SECRET",
            "ORDERS_PAYMENT_WEBHOOK_SECRET", "MEMBERSHIP_OTP_PEPPER", "MEMBERSHIP_SIGNING_KEY_PASSPHRASE"} <= injected


def test_services_read_the_secrets_the_operators_write():
    """MONGO_URL and AMQP credentials come from the Secrets named after the custom resources."""
    mongo = objects("production", "MongoDBCommunity")["o2o-mongo"]
    user = mongo["spec"]["users"][0]
    operator_secret = f"{mongo['metadata']['name']}-{user['db']}-{user['name']}"
    rabbit_secret = f"{objects('production', 'RabbitmqCluster')['o2o-rabbitmq']['metadata']['name']}-default-user"
    env = {e["name"]: e for e in objects("production", "Deployment")["orders"]["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    assert env["MONGO_URL"]["valueFrom"]["secretKeyRef"]["name"] == operator_secret
    assert env["AMQP_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == rabbit_secret


def test_renderer_refuses_what_it_does_not_understand(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nreplacements: []\n")
    with pytest.raises(kustomize.KustomizeError, match="unsupported"):
        kustomize.build(tmp_path)


def test_kubernetes_validate_cli_accepts_a_generated_deployment():
    """The CLI a person would run gives the same answer (offline, strict)."""
    cli = Path(sys.executable).with_name("kubernetes-validate")
    result = subprocess.run([str(cli), "--strict", "-k", KUBERNETES_VERSIONS[-1],
                             str(K8S / "base" / "orders" / "deployment.yaml")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _real_kustomize() -> list[str] | None:
    import shutil
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        probe = subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return ["kubectl", "kustomize"]
    return None


@pytest.mark.skipif(_real_kustomize() is None, reason="neither kustomize nor kubectl (with kustomize) is installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_real_kustomize_renders_the_same_objects(overlay):
    """Where a real kustomize exists, its output is what the tests above validated, object for object."""
    result = subprocess.run([*_real_kustomize(), str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    real = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(result.stdout) if o}
    lite = {(o["kind"], o["metadata"]["name"]): o for o in RENDERED[overlay]}
    assert real.keys() == lite.keys()
    for key, obj in real.items():
        assert obj == lite[key], key


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_notifications_may_not_open_connections_into_private_ranges(overlay):
    policy = objects(overlay, "NetworkPolicy")["o2o-notifications-egress"]
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "notifications"}
    assert policy["spec"]["policyTypes"] == ["Egress"]
    blocks = [peer["ipBlock"] for rule in policy["spec"]["egress"] for peer in rule.get("to", []) if "ipBlock" in peer]
    assert blocks and all(block["cidr"] == "0.0.0.0/0" for block in blocks)
    for inside in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"):
        assert all(inside in block["except"] for block in blocks), inside
