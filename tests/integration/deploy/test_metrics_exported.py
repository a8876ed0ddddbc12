"""Every o2o_* metric that a Grafana dashboard or an alert rule uses is exported by the running services.

Each service that exists is started in-process (settings_for + running_app, real broker and MongoDB wire
server) and its /metrics is scraped; a metric family counts as exported when its HELP/TYPE lines are there.
Kit metrics (libs/metrics.py) must be exported by every service; `o2o_<service>_*` metrics by their service.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import aiohttp
import pytest

from libs.settings import ServiceSettings
from tests.support import free_port, running_app, settings_for

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ("gateway", "catalog", "stock", "orders", "membership", "notifications", "settlement")
KIT_METRICS = set(re.findall(r'"(o2o_[a-z0-9_]+)"', (ROOT / "libs" / "metrics.py").read_text()))


def _dashboards():
    spec = importlib.util.spec_from_file_location("o2o_grafana_dashboards", ROOT / "deploy" / "grafana" / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DASHBOARDS = _dashboards()
USED = DASHBOARDS.used_o2o_metrics()


def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{service}.settings")
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, ServiceSettings) and c is not ServiceSettings and c.__module__ == module.__name__]
    assert len(classes) == 1, f"services/{service}/settings.py should define one settings class, has {classes}"
    return classes[0]


def exported_families(exposition: str) -> set[str]:
    return set(re.findall(r"^# (?:HELP|TYPE) (\S+)", exposition, flags=re.MULTILINE))


def expected_for(service: str) -> dict[str, set[str]]:
    """Used metric names this service must export: kit metrics, and its own o2o_<service>_* metrics."""
    return {name: where for name, where in USED.items()
            if DASHBOARDS.metric_families(name) & KIT_METRICS or name.startswith(f"o2o_{service}_")}


def test_exposition_parser_reads_help_and_type_lines():
    text = ("# HELP o2o_x_total Things\n# TYPE o2o_x_total counter\no2o_x_total{a=\"b\"} 1.0\n"
            "# HELP o2o_y_seconds Time\n# TYPE o2o_y_seconds histogram\n")
    assert exported_families(text) == {"o2o_x_total", "o2o_y_seconds"}


@pytest.mark.parametrize("service", SERVICES)
async def test_service_exports_every_metric_the_dashboards_and_alerts_use(service, mongo_url, bus_namespace):
    if not (ROOT / "services" / service / "app.py").exists():
        pytest.skip(f"services/{service} has no app.py yet")
    app_module = importlib.import_module(f"services.{service}.app")
    extra = {"metrics_port": free_port()} if service == "gateway" else {}
    settings = settings_for(settings_class(service), mongo_url, bus_namespace, **extra)
    async with running_app(app_module.create_app(settings), settings.port) as base:
        # The gateway serves its metrics on its internal listener only.
        metrics_base = f"http://127.0.0.1:{settings.metrics_port}" if service == "gateway" else base
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{metrics_base}/metrics") as response:
                assert response.status == 200
                exposition = await response.text()
    families = exported_families(exposition)
    missing = {name: sorted(where) for name, where in expected_for(service).items()
               if not DASHBOARDS.metric_families(name) & families}
    assert missing == {}, f"{service} does not export metrics that dashboards/alerts use"
