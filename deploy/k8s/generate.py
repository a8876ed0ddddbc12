"""Writes the per-service Kubernetes manifests of deploy/k8s/base/ from one table, so that the seven services
stay alike (probes, security, resources, scaling). The YAML files are committed and are what kustomize reads.

    python deploy/k8s/generate.py          # rewrite deploy/k8s/base/<service>/*.yaml
    python deploy/k8s/generate.py --check  # exit 1 when a committed file is stale
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the services' settings name the secrets each one needs

BASE = Path(__file__).resolve().parent / "base"
IMAGE = "o2o-loop"
PART_OF = "o2o-loop"

# service -> port, replicas/HPA bounds, requests. Stock, orders and the gateway take the flash-sale load.
SERVICES: dict[str, dict] = {
    # The gateway serves /metrics on an internal listener only (GATEWAY_METRICS_PORT), never on its API port.
    "gateway": {"port": 8080, "metrics_port": 9080, "min": 2, "max": 12, "cpu": "200m", "memory": "192Mi", "limit": "512Mi"},
    "catalog": {"port": 8081, "min": 2, "max": 6, "cpu": "100m", "memory": "192Mi", "limit": "512Mi"},
    "stock": {"port": 8082, "min": 2, "max": 12, "cpu": "200m", "memory": "256Mi", "limit": "768Mi"},
    "orders": {"port": 8083, "min": 2, "max": 12, "cpu": "200m", "memory": "256Mi", "limit": "768Mi"},
    "membership": {"port": 8084, "min": 2, "max": 8, "cpu": "150m", "memory": "256Mi", "limit": "768Mi"},
    "notifications": {"port": 8085, "min": 2, "max": 6, "cpu": "100m", "memory": "192Mi", "limit": "512Mi"},
    "settlement": {"port": 8086, "min": 2, "max": 4, "cpu": "100m", "memory": "256Mi", "limit": "768Mi"},
}
MONGO_SECRET = "o2o-mongo-admin-o2o"        # written by the MongoDB community operator: <name>-<db>-<user>
RABBITMQ_SECRET = "o2o-rabbitmq-default-user"  # written by the RabbitMQ cluster operator: <name>-default-user
RABBITMQ_HOST = "o2o-rabbitmq"                 # the cluster's client Service
APP_SECRET = "o2o-secrets"                     # created out of band (see README.md), never in git
# Optional by nature (a relay without authentication needs none), and they have no default to fall back on.
OPTIONAL_SECRETS = {"notifications": ["NOTIFICATIONS_SMTP_USERNAME", "NOTIFICATIONS_SMTP_PASSWORD"]}


def secret_variables(service: str) -> list[str]:
    """The secrets the service refuses to start without (its settings class declares them)."""
    module = importlib.import_module(f"services.{service}.settings")
    settings = next(getattr(module, name) for name in dir(module) if name.lower() == f"{service}settings")
    return sorted(set(settings.secret_variables().values()))


def secret_env(service: str) -> list[dict]:
    """One secretKeyRef per key: a key missing from the Secret keeps the pod from starting (envFrom would
    start it without the variable)."""
    required = [{"name": name, "valueFrom": {"secretKeyRef": {"name": APP_SECRET, "key": name}}}
                for name in secret_variables(service)]
    optional = [{"name": name, "valueFrom": {"secretKeyRef": {"name": APP_SECRET, "key": name, "optional": True}}}
                for name in OPTIONAL_SECRETS.get(service, [])]
    return required + optional


def labels(service: str) -> dict:
    return {"app.kubernetes.io/name": service, "app.kubernetes.io/part-of": PART_OF,
            "app.kubernetes.io/component": "gateway" if service == "gateway" else "service"}


def infrastructure_env(service: str) -> list[dict]:
    if service == "gateway":
        # The gateway keeps nothing and uses no broker. Its only peers are the ingress controller (and
        # Prometheus), which the NetworkPolicy lets in from the cluster's private pod network: X-Forwarded-For
        # is believed from there, never from anywhere else. Narrow it to the cluster's pod CIDR.
        return [{"name": "GATEWAY_TRUSTED_PROXIES",
                 "value": '["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"]'},
                {"name": "GATEWAY_METRICS_PORT", "value": "9080"}]
    return [
        {"name": "MONGO_URL", "valueFrom": {"secretKeyRef": {"name": MONGO_SECRET, "key": "connectionString.standard"}}},
        {"name": "AMQP_USERNAME", "valueFrom": {"secretKeyRef": {"name": RABBITMQ_SECRET, "key": "username"}}},
        {"name": "AMQP_PASSWORD", "valueFrom": {"secretKeyRef": {"name": RABBITMQ_SECRET, "key": "password"}}},
        # $(VAR) is expanded by the kubelet from the variables defined above.
        {"name": "AMQP_URL", "value": f"amqp://$(AMQP_USERNAME):$(AMQP_PASSWORD)@{RABBITMQ_HOST}:5672/"},
    ]


def deployment(service: str, spec: dict) -> dict:
    prefix = service.upper()
    probe = {"httpGet": {"path": "/healthz", "port": "http"}}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": service, "labels": labels(service)},
        "spec": {
            "replicas": spec["min"],
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app.kubernetes.io/name": service}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(service), "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(spec.get("metrics_port", spec["port"])),
                    "prometheus.io/path": "/metrics"}},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": service}}}],
                    "containers": [{
                        "name": service,
                        "image": f"{IMAGE}:latest",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["python", "-m", f"services.{service}"],
                        "ports": [{"name": "http", "containerPort": spec["port"], "protocol": "TCP"},
                                  *([{"name": "metrics", "containerPort": spec["metrics_port"], "protocol": "TCP"}]
                                    if "metrics_port" in spec else [])],
                        "envFrom": [{"configMapRef": {"name": "o2o-config"}}],
                        "env": [{"name": f"{prefix}_HOST", "value": "0.0.0.0"},
                                {"name": f"{prefix}_PORT", "value": str(spec["port"])},
                                *infrastructure_env(service), *secret_env(service)],
                        "resources": {"requests": {"cpu": spec["cpu"], "memory": spec["memory"]},
                                      "limits": {"memory": spec["limit"]}},
                        # Started = the HTTP server answers; ready = Mongo and the broker answer too (/readyz);
                        # alive = the event loop still answers /healthz.
                        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 30},
                        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5,
                                           "timeoutSeconds": 3, "failureThreshold": 3},
                        "livenessProbe": {**probe, "periodSeconds": 10, "timeoutSeconds": 3, "failureThreshold": 3},
                        # Let the endpoints controller take the pod out of the Service before SIGTERM arrives.
                        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
                        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def service_manifest(service: str, spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "labels": labels(service)},
            "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": service},
                     "ports": [{"name": "http", "port": spec["port"], "targetPort": "http", "protocol": "TCP"}]}}


def hpa(service: str, spec: dict) -> dict:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": service, "labels": labels(service)},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service},
            "minReplicas": spec["min"], "maxReplicas": spec["max"],
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                          "target": {"type": "Utilization", "averageUtilization": 70}}}],
            # Scale up fast for a flash sale, down slowly so that a burst does not flap the replicas.
            "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0,
                                     "policies": [{"type": "Percent", "value": 100, "periodSeconds": 30}]},
                         "scaleDown": {"stabilizationWindowSeconds": 300,
                                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}},
        },
    }


def pdb(service: str, spec: dict) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": service, "labels": labels(service)},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": service}}}}


def render_all() -> dict[Path, str]:
    files: dict[Path, str] = {}
    header = "# Generated by deploy/k8s/generate.py - edit the table there and rerun.\n"
    for service, spec in SERVICES.items():
        for name, make in (("deployment", deployment), ("service", service_manifest), ("hpa", hpa), ("pdb", pdb)):
            files[BASE / service / f"{name}.yaml"] = header + yaml.safe_dump(make(service, spec), sort_keys=False)
        files[BASE / service / "kustomization.yaml"] = header + yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": ["deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml"]}, sort_keys=False)
    return files


def main(argv: list[str]) -> int:
    files = render_all()
    if "--check" in argv:
        stale = [str(p.relative_to(BASE)) for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale:
            print(f"stale manifests: {stale}; run `python deploy/k8s/generate.py`", file=sys.stderr)
            return 1
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"wrote {len(files)} files under {BASE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
