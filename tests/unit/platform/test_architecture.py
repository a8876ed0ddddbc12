"""The shape every service follows (docs/ARCHITECTURE.md §2), checked on the code itself.

Each test names the rule it protects; a failure lists every place that breaks it, so the fix is obvious.
"""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVICES = ROOT / "services"
DOMAIN_SERVICES = ("catalog", "stock", "orders", "membership", "notifications", "settlement")

# The domain is the pure core: these bring I/O (network, database, broker, HTTP) or HTTP concepts.
FORBIDDEN_IN_DOMAIN = ("aiohttp", "pymongo", "motor", "aio_pika", "aiormq", "jwt", "httpx", "requests",
                       "libs.bus", "libs.http", "libs.mongo", "libs.outbox", "libs.service", "libs.clients",
                       "libs.problems", "libs.idempotency", "libs.auth", "libs.pagination", "libs.openapi",
                       "libs.testing", "libs.settings", "libs.metrics", "prometheus_client")
# Entrypoints call use cases; only use cases (through repositories) open units of work and touch the database.
ENTRYPOINT_MARKERS = (
    (re.compile(r"\.transaction\("), "opens a unit of work"),
    (re.compile(r"\bstart_session\b"), "opens a session"),
    (re.compile(r"\bsession\s*=(?!=)"), "passes a database session"),
    (re.compile(r"\.db\["), "reads or writes the database directly"),
)
STANDARD_MODULES = ("__main__", "settings", "app", "domain", "events", "repository", "usecases", "handlers",
                    "consumers", "jobs", "metrics")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def python_files(under: Path) -> list[Path]:
    return sorted(p for p in under.rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def entrypoint_files(service: str) -> list[Path]:
    base = SERVICES / service
    files = [base / "consumers.py", base / "jobs.py", base / "handlers.py"]
    if (base / "handlers").is_dir():
        files += python_files(base / "handlers")
    return [f for f in files if f.exists()]


def code_lines(path: Path) -> list[tuple[int, str]]:
    """Source lines without comments and docstrings (a comment may explain a rule in these very words)."""
    source = path.read_text()
    docstring_lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            docstring_lines.update(range(node.lineno, node.end_lineno + 1))
    return [(n, line.split("#", 1)[0]) for n, line in enumerate(source.splitlines(), 1) if n not in docstring_lines]


def test_domain_modules_do_no_io():
    offences = []
    for service in sorted(p.name for p in SERVICES.iterdir() if (p / "domain").is_dir()):
        for path in python_files(SERVICES / service / "domain"):
            for name in imported_modules(path):
                if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN_IN_DOMAIN):
                    offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offences, "domain modules must stay pure:\n" + "\n".join(offences)


@pytest.mark.parametrize("service", DOMAIN_SERVICES)
def test_handlers_consumers_and_jobs_only_call_use_cases(service):
    offences = []
    for path in entrypoint_files(service):
        for number, line in code_lines(path):
            for marker, what in ENTRYPOINT_MARKERS:
                if marker.search(line):
                    offences.append(f"{path.relative_to(ROOT)}:{number} {what}: {line.strip()}")
    assert not offences, "only use cases open units of work:\n" + "\n".join(offences)


@pytest.mark.parametrize("service", DOMAIN_SERVICES)
def test_every_service_has_the_standard_modules(service):
    base = SERVICES / service
    missing = [m for m in STANDARD_MODULES if not (base / f"{m}.py").exists() and not (base / m / "__init__.py").exists()]
    assert not missing, f"services/{service} lacks {missing} (see docs/ARCHITECTURE.md §2)"


def test_no_module_or_function_too_large_to_hold_in_ones_head():
    offences = []
    for path in python_files(SERVICES) + python_files(ROOT / "libs"):
        lines = path.read_text().count("\n") + 1
        if lines > MAX_MODULE_LINES:
            offences.append(f"{path.relative_to(ROOT)}: {lines} lines (max {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    offences.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines "
                                    f"(max {MAX_FUNCTION_LINES})")
    assert not offences, "split along the natural seams:\n" + "\n".join(offences)


def test_production_code_ships_no_test_support():
    offences = []
    for path in python_files(SERVICES) + python_files(ROOT / "libs") + python_files(ROOT / "scripts"):
        for name in imported_modules(path):
            if name == "libs.testing" or name == "tests" or name.startswith("tests."):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offences, "test support lives in tests/support and is never shipped:\n" + "\n".join(offences)
    assert not (ROOT / "libs" / "testing.py").exists(), "libs/testing.py is test support: it belongs in tests/support"


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    wanted = {".py", ".md", ".yml", ".yaml", ".txt", ".toml", ".ini", ".sh", ".cfg", ".json", ""}
    return [ROOT / name for name in listed.splitlines()
            if Path(name).suffix in wanted and not name.startswith(".ci/") and (ROOT / name).is_file()]


def test_the_repository_refers_to_nothing_outside_it_nor_to_issue_numbers():
    outside = re.compile(r"shared[/]")  # [/]: so that grepping the repository for the path finds offenders only
    issue = re.compile(r"\b(issue|task) \d+\b|must-show", re.IGNORECASE)
    offences = []
    for path in tracked_text_files():
        if path == Path(__file__):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if outside.search(line):
                offences.append(f"{path.relative_to(ROOT)}:{number} points outside the repository")
            if path.suffix in (".py", ".md", ".txt", ".yml", ".yaml", ".sh", "") and issue.search(line):
                offences.append(f"{path.relative_to(ROOT)}:{number} cites an issue number")
    assert not offences, "\n".join(offences)
    assert (ROOT / "docs" / "ARCHITECTURE.md").exists()
    assert "docs/ARCHITECTURE.md" in (ROOT / "README.md").read_text()


# --- every public route is in the gateway's aggregated OpenAPI document ------------------------------------

def service_app(service: str):
    module = importlib.import_module(f"services.{service}.app")
    settings_module = importlib.import_module(f"services.{service}.settings")
    settings_class = next(getattr(settings_module, name) for name in dir(settings_module)
                          if name.lower() == f"{service}settings")
    return module.create_app(settings_class(dev_mode=True))


def public_routes(app, service: str) -> set[tuple[str, str]]:
    """(METHOD, /api/v1 path) of every route the gateway would route to `service`."""
    from libs.openapi import KIT_PATHS
    from services.gateway.policy import Access, is_internal, match
    from services.gateway.routing import API_PREFIX, resolve
    routes = set()
    for route in app.router.routes():
        method = route.method.upper()
        resource = route.resource
        if method in ("HEAD", "OPTIONS", "*") or resource is None:
            continue
        path = re.sub(r"\{([^}:]+)(?::[^}]*)?\}", r"{\1}", resource.canonical)
        if path in KIT_PATHS or is_internal(path):
            continue
        routed = resolve(API_PREFIX + path)
        if routed is None or routed[0] != service or match(method, path)[0].access is Access.DENIED:
            continue
        routes.add((method, API_PREFIX + path))
    return routes


async def test_every_public_route_is_described_in_the_aggregated_openapi():
    from libs.openapi import build_openapi
    from services.gateway.docs import aggregate
    documents, expected, undescribed = {}, set(), []
    for service in DOMAIN_SERVICES:
        app = service_app(service)
        assert any(getattr(r.resource, "canonical", None) == "/openapi.json" for r in app.router.routes()), \
            f"{service} does not serve /openapi.json"
        documents[service] = build_openapi(app, service)
        routes = public_routes(app, service)
        expected |= routes
        for route in app.router.routes():
            if route.resource is not None and (route.method.upper(), "/api/v1" + re.sub(
                    r"\{([^}:]+)(?::[^}]*)?\}", r"{\1}", route.resource.canonical)) in routes \
                    and not hasattr(route.handler, "__openapi__"):
                undescribed.append(f"{route.method} {route.resource.canonical} ({service})")
    document = aggregate(documents)
    listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item
              if method in ("get", "post", "put", "patch", "delete")}
    missing = sorted(f"{m} {p}" for m, p in expected - listed)
    assert not missing, "public routes missing from /api/docs:\n" + "\n".join(missing)
    assert not document["x-o2o-dropped-operations"], document["x-o2o-dropped-operations"]
    assert not undescribed, "public routes without @openapi (request/response models):\n" + "\n".join(undescribed)
    assert ("POST", "/api/v1/orders") in listed
    assert any(path.startswith("/api/v1/notifications/") for _, path in listed)
    # The roles shown are the gateway's policy, which is what a caller meets.
    from services.gateway.policy import Access, match
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            policy, _ = match(method.upper(), path[len("/api/v1"):])
            if policy.access is Access.ROLES:
                assert operation.get("x-o2o-roles") == sorted(policy.roles), (method, path)
            if policy.access is Access.PUBLIC:
                assert operation["security"] == [], (method, path)
