"""OpenAPI 3.1 for a service, generated from its aiohttp routes and the pydantic models of its handlers.

How a service publishes its spec (two steps; the gateway merges every service's document at /api/docs):

1. Describe the handlers that take or return JSON, with the decorator (order with @routes.* does not matter):

       from libs.openapi import openapi

       @routes.post("/catalog/products")
       @openapi(summary="Create a product", request=NewProduct, responses={201: ProductOut}, tags=["catalog"])
       async def create_product(request): ...

       @routes.get("/catalog/products")
       @openapi(summary="Browse products", query=ProductQuery, response=ProductPage, public=True)
       async def list_products(request): ...

   `request` is the JSON body model (the one given to `parse_body`), `query` the query model (the one given to
   `parse_query`), `response`/`responses` the models of the successful answers (`None` for an empty body,
   `list[Model]` works too), `public=True` for routes callable without a bearer token. A handler without the
   decorator is still published, with its path parameters and a free-form JSON answer.
   Models can also be given without touching the handler: `add_openapi_route(app, ..., operations={("GET",
   "/catalog/products"): Operation(...)})`.

2. In `create_app`, after the routes are added: `add_openapi_route(app, "Catalog")`. It serves
   `GET /openapi.json` (built once, on first request, from the routes then registered).

Errors are documented once, as the `default` response: an RFC 9457 problem (`application/problem+json`).
Internal routes (`/<segment>/internal/...`) and the kit's own routes (/healthz, /readyz, /metrics) are left out:
they are not part of the public API and the gateway never routes them.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

OPENAPI_VERSION = "3.1.0"
SCHEMA_REF = "#/components/schemas/{model}"
KIT_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `type` is stable and machine-readable.",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "required": ["type", "title", "status", "detail"],
    "additionalProperties": True,
}
BEARER_SCHEME = {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}


@dataclass
class Operation:
    """What the spec says about one handler beyond what the route itself tells."""

    summary: str | None = None
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    request: Any = None  # a pydantic model (or any type a TypeAdapter accepts) for the JSON body
    query: type[BaseModel] | None = None
    responses: dict[int, Any] = field(default_factory=dict)  # status -> model, or None for no body
    public: bool = False
    deprecated: bool = False


def openapi(*, summary: str | None = None, description: str | None = None, tags: Iterable[str] = (),
            request: Any = None, query: type[BaseModel] | None = None, response: Any = None, status: int = 200,
            responses: dict[int, Any] | None = None, public: bool = False,
            deprecated: bool = False) -> Callable:
    """Decorator attaching an `Operation` to a handler (see the module docstring)."""
    answers = dict(responses or {})
    if response is not None:
        answers.setdefault(status, response)

    def decorate(handler: Callable) -> Callable:
        handler.__openapi__ = Operation(summary=summary, description=description, tags=list(tags),  # type: ignore[attr-defined]
                                        request=request, query=query, responses=answers, public=public,
                                        deprecated=deprecated)
        return handler

    return decorate


def is_internal_path(path: str) -> bool:
    return any(segment.lower() == "internal" for segment in path.split("/"))


class _Schemas:
    """Collects JSON Schemas (draft 2020-12, as OpenAPI 3.1 uses) of the models, with shared $defs.

    Request bodies are described as validated (`parse_body` accepts aliases); answers as the kit's
    `json_response` writes them (`model_dump()`: field names, not aliases). When the two shapes of one model
    differ, the answer's keeps the model's name with an `Out` suffix.
    """

    def __init__(self) -> None:
        self.components: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}

    def ref(self, annotation: Any, mode: str) -> dict[str, Any]:
        by_alias = mode == "validation"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            refs, top = models_json_schema([(annotation, mode)], ref_template=SCHEMA_REF, by_alias=by_alias)
            return self._merge(refs[(annotation, mode)], top.get("$defs", {}), "Out" if mode != "validation" else "In")
        schema = TypeAdapter(annotation).json_schema(ref_template=SCHEMA_REF, mode=mode, by_alias=by_alias)
        defs = schema.pop("$defs", {})
        return self._merge(schema, defs, "Out" if mode != "validation" else "In")

    def _merge(self, schema: dict[str, Any], defs: dict[str, Any], suffix: str) -> dict[str, Any]:
        renames: dict[str, str] = {}
        for name, definition in defs.items():
            if name in self.components and self.components[name] != definition:
                new_name = name + suffix
                while new_name in self.components and self.components[new_name] != definition:
                    new_name += suffix
                renames[SCHEMA_REF.format(model=name)] = SCHEMA_REF.format(model=new_name)
        if renames:
            schema = _rewrite_refs(schema, renames)
            defs = {renames.get(SCHEMA_REF.format(model=n), SCHEMA_REF.format(model=n)).rsplit("/", 1)[-1]:
                    _rewrite_refs(d, renames) for n, d in defs.items()}
        self.components.update(defs)
        return schema

    def query_parameters(self, model: type[BaseModel]) -> list[dict[str, Any]]:
        schema = model.model_json_schema(ref_template=SCHEMA_REF, mode="validation")
        schema = {**schema, "properties": self._merge(schema.get("properties", {}), schema.pop("$defs", {}), "In")}
        required = set(schema.get("required", []))
        params = []
        for name, prop in schema.get("properties", {}).items():
            param = {"name": name, "in": "query", "required": name in required, "schema": prop}
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
        return params


def _rewrite_refs(node: Any, renames: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: (renames.get(v, v) if k == "$ref" and isinstance(v, str) else _rewrite_refs(v, renames))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rewrite_refs(item, renames) for item in node]
    return node


def _json(schema: dict[str, Any], content_type: str = "application/json") -> dict[str, Any]:
    return {content_type: {"schema": schema}}


def _operation_spec(method: str, path: str, handler: Callable, op: Operation, schemas: _Schemas,
                    operation_ids: set[str]) -> dict[str, Any]:
    base_id = getattr(handler, "__name__", "") or f"{method.lower()}_{path}"
    base_id = re.sub(r"[^A-Za-z0-9_]", "_", base_id)
    operation_id = base_id if base_id not in operation_ids else f"{base_id}_{method.lower()}"
    while operation_id in operation_ids:
        operation_id += "_"
    operation_ids.add(operation_id)

    spec: dict[str, Any] = {"operationId": operation_id}
    doc = (handler.__doc__ or "").strip()
    summary = op.summary or (doc.splitlines()[0] if doc else None)
    if summary:
        spec["summary"] = summary
    if op.description:
        spec["description"] = op.description
    if op.tags:
        spec["tags"] = op.tags
    if op.deprecated:
        spec["deprecated"] = True
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                  for name in _PATH_PARAM.findall(path)]
    if op.query is not None:
        parameters += schemas.query_parameters(op.query)
    if parameters:
        spec["parameters"] = parameters
    if op.request is not None:
        spec["requestBody"] = {"required": True, "content": _json(schemas.ref(op.request, "validation"))}
    responses: dict[str, Any] = {}
    for status, model in sorted(op.responses.items()):
        answer: dict[str, Any] = {"description": _REASONS.get(status, "Success")}
        if model is not None:
            answer["content"] = _json(schemas.ref(model, "serialization"))
        responses[str(status)] = answer
    if not responses:
        # Undescribed handler: any 2xx JSON answer; the shape is not promised.
        responses["2XX"] = {"description": "Success", "content": _json({})}
    responses["default"] = {"description": "An error, as an RFC 9457 problem",
                            "content": _json({"$ref": SCHEMA_REF.format(model="Problem")},
                                             "application/problem+json")}
    spec["responses"] = responses
    spec["security"] = [] if op.public else [{"bearerAuth": []}]
    return spec


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content"}


def build_openapi(app: web.Application, title: str, version: str = "1.0.0", *, description: str | None = None,
                  operations: dict[tuple[str, str], Operation] | None = None,
                  include_internal: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `app`'s routes (see the module docstring for what is described how)."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    operation_ids: set[str] = set()
    extra = {(m.upper(), p): op for (m, p), op in (operations or {}).items()}
    for route in app.router.routes():
        method = route.method.upper()
        if method in ("HEAD", "*", "OPTIONS"):
            continue
        resource = route.resource
        if resource is None:
            continue
        path = _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", resource.canonical)
        if path in KIT_PATHS or (is_internal_path(path) and not include_internal):
            continue
        handler = route.handler
        op = extra.get((method, path)) or getattr(handler, "__openapi__", None) or Operation()
        paths.setdefault(path, {})[method.lower()] = _operation_spec(method, path, handler, op, schemas,
                                                                     operation_ids)
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    return {
        "openapi": OPENAPI_VERSION,
        "info": info,
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(schemas.components.items())),
                       "securitySchemes": {"bearerAuth": BEARER_SCHEME}},
    }


def add_openapi_route(app: web.Application, title: str, version: str = "1.0.0", *, path: str = "/openapi.json",
                      description: str | None = None,
                      operations: dict[tuple[str, str], Operation] | None = None) -> None:
    """Serve the app's OpenAPI 3.1 document at `GET /openapi.json` (public; built on first request)."""

    built: list[dict[str, Any]] = []  # the routes are final once the app serves, so build once

    async def openapi_json(request: web.Request) -> web.Response:
        if not built:
            built.append(build_openapi(request.app, title, version, description=description, operations=operations))
        return web.json_response(built[0])

    app.router.add_get(path, openapi_json)
