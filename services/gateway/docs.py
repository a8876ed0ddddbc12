"""The aggregated OpenAPI 3.1 document: every service's `GET /openapi.json`, merged under `/api/v1`.

Merging is pure (`aggregate`), so it is unit-tested with hand-made documents. A service that is down, has no
spec yet or publishes something that is not an OpenAPI document is left out and listed under
`x-o2o-missing-services`; the rest of the document stays valid.
"""
from __future__ import annotations

import asyncio
import copy
import html
import json
import re
from typing import Any

import aiohttp

from libs.openapi import BEARER_SCHEME, OPENAPI_VERSION, PROBLEM_SCHEMA
from services.gateway.policy import Access, is_internal, match
from services.gateway.routing import API_PREFIX, resolve

COMPONENT_SECTIONS = ("schemas", "responses", "parameters", "examples", "requestBodies", "headers", "links",
                      "callbacks", "pathItems")
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


async def fetch_documents(session: aiohttp.ClientSession, upstreams: dict[str, str],
                          timeout_s: float) -> dict[str, dict[str, Any] | None]:
    """Each service's OpenAPI document, or None when it cannot be had (down, 404, not JSON)."""

    async def fetch(name: str, base: str) -> tuple[str, dict[str, Any] | None]:
        try:
            async with session.get(base + "/openapi.json", timeout=aiohttp.ClientTimeout(total=timeout_s)) as answer:
                if answer.status != 200:
                    return name, None
                document = json.loads(await answer.read())
                return name, document if _looks_like_openapi(document) else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, UnicodeDecodeError):
            return name, None

    return dict(await asyncio.gather(*(fetch(name, base) for name, base in upstreams.items())))


def _looks_like_openapi(document: Any) -> bool:
    return (isinstance(document, dict) and str(document.get("openapi", "")).startswith("3.")
            and isinstance(document.get("paths", {}), dict))


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value in renames:
                out[key] = renames[value]
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    return node


def _access_note(method: str, service_path: str) -> tuple[bool, list[str] | None]:
    policy, _ = match(method.upper(), service_path)
    if policy.access is Access.PUBLIC:
        return True, None
    if policy.access is Access.ROLES:
        return False, sorted(policy.roles)
    return False, None


def aggregate(documents: dict[str, dict[str, Any] | None], title: str = "O2O Loop API",
              version: str = "1.0.0") -> dict[str, Any]:
    """One OpenAPI 3.1 document of everything the gateway routes.

    Paths get the `/api/v1` prefix, and only those the gateway would route to the publishing service are kept
    (never internal ones, never routes the policy table denies). Each service's components are renamed
    `<service>.<name>` so two services may both have a `Line`. Security follows the gateway's policy table,
    which is what a caller actually meets; the roles it requires are given as `x-o2o-roles`.
    """
    paths: dict[str, Any] = {}
    components: dict[str, dict[str, Any]] = {"schemas": {"Problem": PROBLEM_SCHEMA}}
    tags: list[dict[str, str]] = []
    missing: list[str] = []
    for service, document in sorted(documents.items()):
        if document is None:
            missing.append(service)
            continue
        document = copy.deepcopy(document)
        renames: dict[str, str] = {}
        source_components = document.get("components") or {}
        for section in COMPONENT_SECTIONS:
            for name in (source_components.get(section) or {}):
                if section == "schemas" and name == "Problem":
                    renames["#/components/schemas/Problem"] = "#/components/schemas/Problem"
                    continue
                renames[f"#/components/{section}/{name}"] = (
                    f"#/components/{section}/{service}.{_SAFE_NAME.sub('_', name)}")
        for section in COMPONENT_SECTIONS:
            for name, value in (source_components.get(section) or {}).items():
                if section == "schemas" and name == "Problem":
                    continue
                target = components.setdefault(section, {})
                target[f"{service}.{_SAFE_NAME.sub('_', name)}"] = _rewrite_refs(value, renames)
        used = False
        for service_path, item in (document.get("paths") or {}).items():
            if not isinstance(item, dict) or not isinstance(service_path, str) or is_internal(service_path):
                continue
            routed = resolve(API_PREFIX + service_path)
            if routed is None or routed[0] != service:
                continue
            new_item = {}
            for key, value in item.items():
                if key not in HTTP_METHODS:
                    if key in ("parameters", "summary", "description"):
                        new_item[key] = _rewrite_refs(value, renames)
                    continue
                policy, _ = match(key.upper(), service_path)
                if policy.access is Access.DENIED or not isinstance(value, dict):
                    continue
                operation = _rewrite_refs(value, renames)
                operation["operationId"] = f"{service}.{operation.get('operationId') or key + service_path}"
                operation.setdefault("tags", [service])
                is_public, allowed_roles = _access_note(key, service_path)
                operation["security"] = [] if is_public else [{"bearerAuth": []}]
                if allowed_roles:
                    operation["x-o2o-roles"] = allowed_roles
                operation.setdefault("responses", {}).setdefault("default", {
                    "description": "An error, as an RFC 9457 problem",
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
                new_item[key] = operation
            if any(k in HTTP_METHODS for k in new_item):
                paths[API_PREFIX + service_path] = new_item
                used = True
        if used:
            tags.append({"name": service, "description": (document.get("info") or {}).get("title", service)})
    components["securitySchemes"] = {"bearerAuth": BEARER_SCHEME}
    dropped = _drop_dangling(paths, components)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version,
                 "description": "Every public route of the suite, through the gateway. Errors are RFC 9457 "
                                "problems; send `Authorization: Bearer <token>` except on public routes."},
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": dict(sorted(paths.items())),
        "components": components,
        "x-o2o-missing-services": missing,
        "x-o2o-dropped-operations": dropped,
    }


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(v) for v in node.values())) if node else found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def _drop_dangling(paths: dict[str, Any], components: dict[str, dict[str, Any]]) -> list[str]:
    """Leave out operations that point at a component nobody published, so one service's broken document
    cannot make the whole aggregate invalid. Returns "METHOD path" of what was left out."""
    known = {f"#/components/{section}/{name}" for section, entries in components.items() for name in entries}
    # A component may itself point at a missing one: drop those first, until nothing changes.
    while True:
        broken = [(section, name) for section, entries in components.items() if section != "securitySchemes"
                  for name, value in entries.items() if not _refs(value) <= known]
        if not broken:
            break
        for section, name in broken:
            del components[section][name]
            known.discard(f"#/components/{section}/{name}")
    dropped = []
    for path in list(paths):
        item = paths[path]
        for method in [m for m in HTTP_METHODS if m in item]:
            if not _refs(item[method]) <= known:
                del item[method]
                dropped.append(f"{method.upper()} {path}")
        if not any(m in item for m in HTTP_METHODS):
            del paths[path]
    return dropped


def render_html(document: dict[str, Any]) -> str:
    """A readable, script-free page of the aggregated document (so a strict CSP can stay on)."""
    esc = html.escape
    rows = []
    for path, item in document.get("paths", {}).items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            access = "public" if operation.get("security") == [] else (
                "roles: " + ", ".join(operation["x-o2o-roles"]) if operation.get("x-o2o-roles") else "authenticated")
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            body_name = body.get("$ref", "").rsplit("/", 1)[-1] if isinstance(body, dict) else ""
            answers = ", ".join(str(code) for code in operation.get("responses", {}))
            rows.append(f"<tr><td class=m>{esc(method.upper())}</td><td><code>{esc(path)}</code></td>"
                        f"<td>{esc(operation.get('summary', ''))}</td><td>{esc(access)}</td>"
                        f"<td>{esc(body_name)}</td><td>{esc(answers)}</td></tr>")
    missing = document.get("x-o2o-missing-services") or []
    missing_note = (f"<p class=warn>No OpenAPI document from: {esc(', '.join(missing))}.</p>" if missing else "")
    info = document.get("info", {})
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{esc(info.get('title', 'API'))}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ddd;padding:.35rem .5rem;text-align:left;vertical-align:top}}
.m{{font-weight:bold;font-family:monospace}}.warn{{color:#a40}}</style></head>
<body><h1>{esc(info.get('title', 'API'))} <small>{esc(str(info.get('version', '')))}</small></h1>
<p>{esc(info.get('description', ''))}</p>
<p>Machine-readable: <a href="/api/docs/openapi.json">/api/docs/openapi.json</a> (OpenAPI {esc(document.get('openapi', ''))}).</p>
{missing_note}
<table><thead><tr><th>Method</th><th>Path</th><th>Summary</th><th>Access</th><th>Body</th><th>Responses</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table></body></html>"""
