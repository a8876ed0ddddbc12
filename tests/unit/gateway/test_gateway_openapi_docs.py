"""libs.openapi (one service's document) and the gateway's merge of several, without I/O."""
from __future__ import annotations

from aiohttp import web
from openapi_spec_validator import validate
from pydantic import BaseModel, Field

from libs.openapi import Operation, build_openapi, openapi
from services.gateway.docs import aggregate, render_html


class Address(BaseModel):
    lat: float
    lng: float


class NewLocation(BaseModel):
    name: str = Field(min_length=1)
    address: Address


class LocationOut(BaseModel):
    id: str
    name: str


class Near(BaseModel):
    sku: str
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)
    limit: int = 10


def stock_app() -> web.Application:
    routes = web.RouteTableDef()

    @routes.post("/stock/locations")
    @openapi(summary="Add a location", request=NewLocation, responses={201: LocationOut})
    async def add_location(request):
        """Not used: the summary above wins."""

    @routes.get("/stock/availability")
    @openapi(query=Near, response=list[LocationOut], public=True)
    async def availability(request):
        """Nearest stores that can serve a SKU now."""

    @routes.get(r"/stock/locations/{location_id:loc_\w+}")
    async def one_location(request):
        ...

    @routes.post("/stock/internal/reservations")
    async def reserve(request):
        ...

    @routes.delete("/stock/locations/{location_id}")
    @openapi(responses={204: None})
    async def remove(request):
        ...

    app = web.Application()
    app.add_routes(routes)
    app.router.add_get("/healthz", one_location)
    return app


def test_build_openapi_describes_models_params_and_security():
    document = build_openapi(stock_app(), "Stock", "2.0.0")
    validate(document)
    paths = document["paths"]
    assert set(paths) == {"/stock/locations", "/stock/availability", "/stock/locations/{location_id}"}
    add = paths["/stock/locations"]["post"]
    assert add["summary"] == "Add a location"
    assert add["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/NewLocation"}
    assert add["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/LocationOut"}
    assert add["security"] == [{"bearerAuth": []}]
    schemas = document["components"]["schemas"]
    assert {"NewLocation", "Address", "LocationOut", "Problem"} <= set(schemas)
    near = paths["/stock/availability"]["get"]
    assert near["security"] == [] and near["summary"] == "Nearest stores that can serve a SKU now."
    params = {p["name"]: p for p in near["parameters"]}
    assert params["sku"]["required"] and not params["limit"]["required"]
    assert params["lat"]["schema"]["maximum"] == 90
    assert near["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    one = paths["/stock/locations/{location_id}"]["get"]  # the route's regex is not part of the template
    assert one["parameters"][0]["name"] == "location_id" and "2XX" in one["responses"]
    remove = paths["/stock/locations/{location_id}"]["delete"]
    assert remove["responses"]["204"] == {"description": "No Content"}


def test_operations_can_be_given_without_touching_handlers():
    described = Operation(summary="One location", responses={200: LocationOut}, public=True)
    document = build_openapi(stock_app(), "Stock", operations={("GET", "/stock/locations/{location_id}"): described})
    one = document["paths"]["/stock/locations/{location_id}"]["get"]
    assert one["summary"] == "One location" and one["security"] == []
    assert one["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LocationOut"}


def catalog_doc() -> dict:
    return {
        "openapi": "3.1.0", "info": {"title": "Catalog", "version": "1"},
        "paths": {
            "/catalog/products": {"get": {"operationId": "list", "responses": {"200": {
                "description": "ok", "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Line"}}}}}},
                                  "post": {"operationId": "create", "responses": {"201": {"description": "ok"}}}},
            "/catalog/internal/quote": {"post": {"responses": {"200": {"description": "ok"}}}},
            "/orders/hijack": {"get": {"responses": {"200": {"description": "ok"}}}},
        },
        "components": {"schemas": {"Line": {"type": "object", "properties": {"sku": {"type": "string"}}},
                                   "Problem": {"type": "object"}}},
    }


def orders_doc() -> dict:
    return {
        "openapi": "3.1.0", "info": {"title": "Orders", "version": "1"},
        "paths": {"/orders": {"post": {"operationId": "create", "requestBody": {"content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Line"}}}}, "responses": {"201": {"description": "ok"}}}}},
        "components": {"schemas": {"Line": {"type": "object", "properties": {"qty": {"type": "integer"}}}}},
    }


def test_aggregate_prefixes_renames_and_filters():
    document = aggregate({"catalog": catalog_doc(), "orders": orders_doc(), "stock": None})
    validate(document)
    assert set(document["paths"]) == {"/api/v1/catalog/products", "/api/v1/orders"}
    schemas = document["components"]["schemas"]
    assert schemas["catalog.Line"]["properties"] == {"sku": {"type": "string"}}
    assert schemas["orders.Line"]["properties"] == {"qty": {"type": "integer"}}
    listing = document["paths"]["/api/v1/catalog/products"]["get"]
    assert listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"] == \
        "#/components/schemas/catalog.Line"
    assert listing["security"] == []  # public by the gateway's table
    assert listing["operationId"] == "catalog.list"
    create = document["paths"]["/api/v1/catalog/products"]["post"]
    assert create["security"] == [{"bearerAuth": []}] and create["x-o2o-roles"] == ["hq_admin"]
    assert "default" in create["responses"]
    assert document["x-o2o-missing-services"] == ["stock"]


def test_aggregate_of_nothing_is_still_valid_and_the_page_renders():
    document = aggregate({"catalog": None, "orders": None})
    validate(document)
    page = render_html(aggregate({"catalog": catalog_doc()}))
    assert "/api/v1/catalog/products" in page and "roles: hq_admin" in page
    hostile = catalog_doc()
    hostile["paths"]["/catalog/products"]["get"]["summary"] = "<script>alert(1)</script>"
    assert "<script>" not in render_html(aggregate({"catalog": hostile}))


class Stored(BaseModel):
    """Read from Mongo by its `_id`, answered as `id` (the kit's json_response dumps field names)."""
    id: str = Field(alias="_id")
    name: str


def test_aliases_are_described_as_each_direction_sees_them():
    routes = web.RouteTableDef()

    @routes.post("/stock/things")
    @openapi(request=Stored, responses={201: Stored})
    async def create(request):
        ...

    app = web.Application()
    app.add_routes(routes)
    document = build_openapi(app, "Stock")
    validate(document)
    operation = document["paths"]["/stock/things"]["post"]
    schemas = document["components"]["schemas"]
    request_name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    answer_name = operation["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schemas[request_name]["properties"]) == {"_id", "name"}
    assert set(schemas[answer_name]["properties"]) == {"id", "name"}
    assert request_name != answer_name
    dumped = Stored.model_validate({"_id": "x", "name": "n"}).model_dump()
    assert set(dumped) == set(schemas[answer_name]["required"])


def test_an_operation_with_a_dangling_reference_is_left_out_not_the_whole_document():
    broken = orders_doc()
    broken["paths"]["/orders/{order_id}"] = {"get": {"parameters": [
        {"name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/Nowhere"}}}}}}}
    broken["components"]["schemas"]["Chain"] = {"$ref": "#/components/schemas/AlsoNowhere"}
    document = aggregate({"orders": broken, "catalog": catalog_doc()})
    validate(document)
    assert document["x-o2o-dropped-operations"] == ["GET /api/v1/orders/{order_id}"]
    assert "/api/v1/orders" in document["paths"] and "/api/v1/catalog/products" in document["paths"]
    assert "orders.Chain" not in document["components"]["schemas"]
