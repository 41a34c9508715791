"""The OpenAPI document of the API, built from the route table and the request models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from api.schemas import EndpointCreate, EndpointUpdate, MigrationCreate

P = "/v1/{project_id}"
ERROR = {"$ref": "#/components/schemas/Error"}


def _op(summary: str, *, body: tuple[str, type[BaseModel]] | None = None, ok: int = 200,
        key: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            str(ok): {"description": "Success"} if ok == 204 else {
                "description": "Success",
                "content": {"application/json": {"schema": {"type": "object", "required": [key] if key else []}}},
            },
            "400": {"description": "Bad request", "content": {"application/json": {"schema": ERROR}}},
            "404": {"description": "Not found", "content": {"application/json": {"schema": ERROR}}},
        },
    }
    if body:
        wrapper, model = body
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": [wrapper],
            "properties": {wrapper: {"$ref": f"#/components/schemas/{model.__name__}"}},
        }}}}
    return op


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        f"{P}/migrations": {
            "get": _op("List migrations", key="migrations"),
            "post": _op("Create a migration (endpoint form or inline form)", body=("migration", MigrationCreate),
                        key="migration"),
        },
        f"{P}/migrations/detail": {"get": _op("List migrations with their tasks", key="migrations")},
        f"{P}/migrations/{{id}}": {
            "get": _op("Show a migration with tasks, events and progress updates", key="migration"),
            "delete": _op("Delete a finished migration (COMPLETED, ERROR or CANCELED)", ok=204),
        },
        f"{P}/migrations/{{id}}/actions": {
            "post": _op('Cancel: {"cancel": null} or {"cancel": {"force": true}}', ok=204),
        },
        f"{P}/endpoints": {
            "get": _op("List endpoints", key="endpoints"),
            "post": _op("Create an endpoint", body=("endpoint", EndpointCreate), key="endpoint"),
        },
        f"{P}/endpoints/{{id}}": {
            "get": _op("Show an endpoint", key="endpoint"),
            "put": _op("Update an endpoint", body=("endpoint", EndpointUpdate), key="endpoint"),
            "delete": _op("Delete an endpoint no migration uses", ok=204),
        },
        f"{P}/endpoints/{{id}}/actions": {"post": _op('{"validate-connection": null}', key="validate-connection")},
        f"{P}/endpoints/{{id}}/instances": {"get": _op("Instances of an endpoint", key="instances")},
        f"{P}/endpoints/{{id}}/instances/{{instance_id}}": {"get": _op("One instance (id: URL-safe base64)",
                                                                      key="instance")},
        f"{P}/endpoints/{{id}}/networks": {"get": _op("Networks", key="networks")},
        f"{P}/endpoints/{{id}}/storage": {"get": _op("Storage backends", key="storage")},
        f"{P}/endpoints/{{id}}/destination-options": {"get": _op("Destination options", key="destination_options")},
        f"{P}/endpoints/{{id}}/source-options": {"get": _op("Source options", key="source_options")},
        f"{P}/providers": {"get": _op("Platforms and their provider types", key="providers")},
        f"{P}/providers/{{platform}}/schemas/{{provider_type}}": {"get": _op("Provider JSON schemas", key="schemas")},
    }
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "fault": {"type": "string"}},
        }}},
    }
    for model in (MigrationCreate, EndpointCreate, EndpointUpdate):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sterna migration API (Coriolis v1 compatible)", "version": "1.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
