"""The OpenAPI document of the API, generated from the route table and the request models.

Every route the app serves becomes an operation: its path parameters are declared from the route's
path (``{name}`` or ``{name:int}``), its request body comes from the pydantic model its handler
validates, and its responses are described. A route added to the app appears here without an edit;
a handler that takes a body needs an entry in :data:`BODIES` (or :data:`ACTIONS`), one that reads a
query string an entry in :data:`QUERIES`. Answers are described by the models of ``api.response_models``
(which forbid undeclared fields; the views build the answers, and the suite reads real answers against
these schemas), errors by the Coriolis error body.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel
from starlette.routing import BaseRoute, Route

from api import deployments, endpoints, executions, migrations, schedules, transfers
from api.listing import ACTION_SORT, EXECUTION_SORT, EXECUTION_STATUSES
from api.response_models import (
    VIEWS,
    DeploymentView,
    DisksDeletedView,
    EndpointView,
    ExecutionView,
    MigrationView,
    ScheduleView,
    TransferView,
)
from api.schemas import CancelArgs, EndpointCreate, EndpointUpdate, MigrationCreate
from api.transfer_schemas import (
    DeploymentCreate,
    ExecutionCreate,
    ScheduleCreate,
    ScheduleUpdate,
    TransferCreate,
    TransferUpdate,
)

ERROR = {"$ref": "#/components/schemas/Error"}
PARAM = re.compile(r"{(\w+)(?::(\w+))?}")
CONVERTORS: dict[str, dict[str, Any]] = {
    "str": {"type": "string", "pattern": "^[^/]+$"},
    "int": {"type": "integer"},
    "path": {"type": "string"},
    "uuid": {"type": "string", "format": "uuid"},
    "float": {"type": "number"},
}

# Handlers that validate a body: (wrapping key or None for an unwrapped body, model).
BODIES: dict[Callable[..., Any], tuple[str | None, type[BaseModel]]] = {
    migrations.create: ("migration", MigrationCreate),
    endpoints.create: ("endpoint", EndpointCreate),
    endpoints.update: ("endpoint", EndpointUpdate),
    transfers.create: ("transfer", TransferCreate),
    transfers.update: ("transfer", TransferUpdate),
    executions.create: ("execution", ExecutionCreate),
    deployments.create: ("deployment", DeploymentCreate),
    schedules.create: (None, ScheduleCreate),
    schedules.update: (None, ScheduleUpdate),
}
_CANCEL = {"cancel": {"anyOf": [{"type": "null"}, {"$ref": "#/components/schemas/CancelArgs"}]}}
# Handlers of ``…/actions``: the actions they accept, each a key of the body.
ACTIONS: dict[Callable[..., Any], dict[str, Any]] = {
    migrations.actions: _CANCEL,
    executions.actions: _CANCEL,
    deployments.actions: _CANCEL,
    transfers.actions: {"delete-disks": {"type": "null"}},
    endpoints.actions: {"validate-connection": {"type": "null"}},
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _repeated(name: str, values: Iterable[str], description: str) -> dict[str, Any]:
    return {**_query(name, {"type": "array", "items": {"type": "string", "enum": sorted(values)}}, description),
            "style": "form", "explode": True}


def _flag(name: str, description: str) -> dict[str, Any]:
    return _query(name, {"type": "boolean"}, description + " (true or false; 1/0 and yes/no too)")


_MARKER = _query("marker", {"type": "string"}, "the id of the last item of the previous page")
_LIMIT = _query("limit", {"type": "integer", "minimum": 0}, "at most this many items")
_EXECUTION_STATUS = _query("status", {"type": "string", "enum": sorted(EXECUTION_STATUSES)},
                           "only items whose (last) execution has this status")


def _page(sort: Iterable[str]) -> list[dict[str, Any]]:
    keys = sorted(sort)
    return [_MARKER, _LIMIT,
            _repeated("sort_key", keys, "sort by these keys, in order (default created_at)"),
            _repeated("sort_dir", ["asc", "desc"], "the direction of each sort_key, in order (default desc)")]


_ACTION_LIST = [*_page(ACTION_SORT), _EXECUTION_STATUS, _flag("show_deleted", "include deleted items"),
                _flag("include_task_info", "add each instance's replica state (info)")]
_MIGRATION_LIST = [_query("status", {"type": "string"}, "only migrations whose last execution has this status"),
                   _MARKER, _LIMIT]
_ENV = _query("env", {"type": "string"}, "URL-safe base64 of a JSON object: the environment the provider lists in "
              "(a region, a resource group…)")
# Handlers that read a query string: the parameters they read (api/listing.py and the handlers).
QUERIES: dict[Callable[..., Any], list[dict[str, Any]]] = {
    migrations.index: _MIGRATION_LIST,
    migrations.detail: _MIGRATION_LIST,
    transfers.index: _ACTION_LIST,
    transfers.detail: _ACTION_LIST,
    deployments.index: _ACTION_LIST,
    deployments.detail: _ACTION_LIST,
    executions.index: [*_page(EXECUTION_SORT), _EXECUTION_STATUS],
    executions.detail: [*_page(EXECUTION_SORT), _EXECUTION_STATUS],
    schedules.index: [_flag("show_expired", "include schedules past their expiration_date")],
    endpoints.instances: [
        _query("name", {"type": "string"}, "only instances whose name matches (each provider's filter)"),
        _MARKER, _LIMIT, _ENV],
    endpoints.instance: [_ENV],
    endpoints.networks: [_ENV],
    endpoints.storage: [_ENV],
    endpoints.destination_options: [_ENV],
    endpoints.source_options: [_ENV],
}

def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _wrapped(key: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": [key], "properties": {key: schema}, "additionalProperties": False}


def _many(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": schema}


_OBJECT: dict[str, Any] = {"type": "object"}
# ``/migrations`` also shows the deployments old clients made through it (``migration deploy replica``).
_MIGRATION = {"anyOf": [_ref(MigrationView), _ref(DeploymentView)]}
_READY = {"type": "object", "required": ["status", "checks"], "properties": {
    "status": {"type": "string", "enum": ["ready", "not ready"]},
    "checks": {"type": "object", "additionalProperties": {"type": "string"}}}}
# What each handler answers with a 200, by (module, handler name): "one"/"many" wrap a resource under
# its key, singular or plural (a transfer's key is ``replica`` on the ``/replicas`` paths); "raw" is as is.
_ANSWERS: dict[tuple[str, str], tuple[str, str | None, dict[str, Any]]] = {
    ("app", "versions"): ("raw", None, _wrapped("versions", _many(_OBJECT))),
    ("app", "openapi_json"): ("raw", None, _OBJECT),
    ("health", "healthz"): ("raw", None, {"type": "object", "required": ["status"],
                                         "properties": {"status": {"type": "string", "enum": ["ok"]}}}),
    ("providers", "list_providers"): ("one", "providers", _OBJECT),
    ("providers", "schemas"): ("one", "schemas", _OBJECT),
    ("endpoints", "index"): ("many", "endpoint", _ref(EndpointView)),
    ("endpoints", "create"): ("one", "endpoint", _ref(EndpointView)),
    ("endpoints", "show"): ("one", "endpoint", _ref(EndpointView)),
    ("endpoints", "update"): ("one", "endpoint", _ref(EndpointView)),
    ("endpoints", "actions"): ("one", "validate-connection", {
        "type": "object", "required": ["valid", "message"],
        "properties": {"valid": {"type": "boolean"}, "message": {"type": ["string", "null"]}}}),
    ("endpoints", "instances"): ("one", "instances", _many(_OBJECT)),
    ("endpoints", "instance"): ("one", "instance", _OBJECT),
    ("endpoints", "networks"): ("one", "networks", _many(_OBJECT)),
    ("endpoints", "storage"): ("one", "storage", _OBJECT),
    ("endpoints", "destination_options"): ("one", "destination_options", _many(_OBJECT)),
    ("endpoints", "source_options"): ("one", "source_options", _many(_OBJECT)),
    ("migrations", "index"): ("many", "migration", _MIGRATION),
    ("migrations", "detail"): ("many", "migration", _MIGRATION),
    ("migrations", "create"): ("one", "migration", _MIGRATION),
    ("migrations", "show"): ("one", "migration", _MIGRATION),
    ("transfers", "index"): ("many", "transfer", _ref(TransferView)),
    ("transfers", "detail"): ("many", "transfer", _ref(TransferView)),
    ("transfers", "create"): ("one", "transfer", _ref(TransferView)),
    ("transfers", "show"): ("one", "transfer", _ref(TransferView)),
    # An update runs as an execution of its own (``transfer_update``); delete-disks too.
    ("transfers", "update"): ("one", "execution", _ref(ExecutionView)),
    ("transfers", "actions"): ("one", "execution", _ref(DisksDeletedView)),
    ("executions", "index"): ("many", "execution", _ref(ExecutionView)),
    ("executions", "detail"): ("many", "execution", _ref(ExecutionView)),
    ("executions", "create"): ("one", "execution", _ref(ExecutionView)),
    ("executions", "show"): ("one", "execution", _ref(ExecutionView)),
    ("schedules", "index"): ("many", "schedule", _ref(ScheduleView)),
    ("schedules", "create"): ("one", "schedule", _ref(ScheduleView)),
    ("schedules", "show"): ("one", "schedule", _ref(ScheduleView)),
    ("schedules", "update"): ("one", "schedule", _ref(ScheduleView)),
    ("deployments", "index"): ("many", "deployment", _ref(DeploymentView)),
    ("deployments", "detail"): ("many", "deployment", _ref(DeploymentView)),
    ("deployments", "create"): ("one", "deployment", _ref(DeploymentView)),
    ("deployments", "show"): ("one", "deployment", _ref(DeploymentView)),
}
# Handlers that answer 204 and no body: deletes and cancels.
_NO_CONTENT = {("migrations", "delete"), ("migrations", "actions"), ("endpoints", "delete"),
               ("transfers", "delete"), ("executions", "delete"), ("executions", "actions"),
               ("schedules", "delete"), ("deployments", "delete"), ("deployments", "actions")}


def _success(handler: Callable[..., Any], path: str) -> dict[str, Any]:
    """The success responses of a handler: its 200 body's schema, or its 204."""
    which = (handler.__module__.rsplit(".", 1)[-1], handler.__name__)
    if which in _NO_CONTENT:
        return {"204": {"description": "Done; no content"}}
    if which == ("health", "metrics"):
        return {"200": {"description": "Prometheus text exposition",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}
    if which == ("health", "readyz"):
        return {"200": {"description": "Ready", "content": _json(_READY)},
                "503": {"description": "Not ready: the checks say which peer failed", "content": _json(_READY)}}
    if which not in _ANSWERS:
        return {"2XX": {"description": "Success (a JSON object, or no content for 204)"}}
    kind, key, schema = _ANSWERS[which]
    if kind != "raw" and key is not None:
        key = _wrapper(key, path)
        if kind == "many":
            key, schema = key + "s", _many(schema)
        schema = _wrapped(key, schema)
    return {"200": {"description": "Success", "content": _json(schema)}}


MODELS: tuple[type[BaseModel], ...] = (
    MigrationCreate, EndpointCreate, EndpointUpdate, TransferCreate, TransferUpdate, ExecutionCreate,
    DeploymentCreate, ScheduleCreate, ScheduleUpdate, CancelArgs, *VIEWS,
)


def _wrapper(key: str, path: str) -> str:
    """The body key a handler reads on this path: the legacy aliases use the Coriolis names."""
    if "/replicas" in path and key == "transfer":
        return "replica"
    if path.endswith("/migrations") and key == "deployment":
        return "migration"
    return key


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _body(handler: Callable[..., Any], path: str) -> dict[str, Any] | None:
    if handler in BODIES:
        key, model = BODIES[handler]
        ref = {"$ref": f"#/components/schemas/{model.__name__}"}
        if key is None:
            return {"required": True, "content": _json(ref)}
        key = _wrapper(key, path)
        return {"required": True, "content": _json({"type": "object", "required": [key], "properties": {key: ref}})}
    if handler in ACTIONS:
        actions = ACTIONS[handler]
        return {"required": True, "content": _json({
            "type": "object", "properties": actions, "minProperties": 1, "maxProperties": 1,
        })}
    return None


# Summaries of the handlers every resource has, by handler name: {0} is the resource group (its tag).
_VERBS = {
    "index": "List the {0}", "detail": "List the {0}, each with its tasks", "show": "Show one of the {0}",
    "create": "Create one of the {0}", "update": "Update one of the {0}", "delete": "Delete one of the {0}",
    "actions": "Run an action on one of the {0}",
}
_NAMED = {"healthz": "Liveness: answers while the process runs",
          "readyz": "Readiness: the record DB and Temporal answer",
          "metrics": "Prometheus metrics of this API process", "openapi_json": "This OpenAPI document",
          "versions": "The API versions served", "instances": "List the instances an endpoint sees",
          "instance": "Show one instance of an endpoint (its id, URL-safe base64, in the path)",
          "networks": "List the networks of an endpoint", "storage": "List the storage of an endpoint",
          "destination_options": "The destination environment options of an endpoint",
          "source_options": "The source environment options of an endpoint",
          "schemas": "A provider's JSON schema: 16 connection info, 4 destination, 8 source environment"}


def _summary(handler: Callable[..., Any], path: str) -> str:
    doc = (handler.__doc__ or "").strip()
    if doc:
        return doc.splitlines()[0]
    name, group = handler.__name__, handler.__module__.rsplit(".", 1)[-1]
    if name in _NAMED:
        return _NAMED[name]
    if name in _VERBS:
        summary = _VERBS[name].format(group)
        # The seed's singular ``/action`` route and the ``/replicas`` paths are aliases of the current ones.
        if path.endswith("/action"):
            summary += " (the seed's /action alias of /actions)"
        elif "/replicas" in path:
            summary += " (/replicas, the pre-2024 name of /transfers)"
        return summary
    return name.replace("_", " ").capitalize()


def _operation(route: Route, path: str, method: str) -> dict[str, Any]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": dict(CONVERTORS.get(conv or "str", CONVERTORS["str"]))}
        for name, conv in PARAM.findall(route.path)
    ]
    op: dict[str, Any] = {
        "operationId": f"{method}:{path}",
        "summary": _summary(route.endpoint, path),
        "tags": [route.endpoint.__module__.rsplit(".", 1)[-1]],
        "responses": {
            **_success(route.endpoint, path),
            "4XX": {"description": "A client error, in the Coriolis error format", "content": _json(ERROR)},
            "default": {"description": "A server error, in the Coriolis error format", "content": _json(ERROR)},
        },
    }
    params += [dict(q) for q in QUERIES.get(route.endpoint, [])]
    if params:
        op["parameters"] = params
    body = _body(route.endpoint, path)
    if body is not None:
        op["requestBody"] = body
    return op


def paths(routes: Iterable[BaseRoute]) -> dict[str, dict[str, Any]]:
    """The ``paths`` of the document: one operation per method of each route."""
    out: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        path = PARAM.sub(r"{\1}", route.path)
        for method in sorted(route.methods or {"GET"}):
            if method == "HEAD":
                continue
            out.setdefault(path, {})[method.lower()] = _operation(route, path, method.lower())
    return out


def schemas() -> dict[str, Any]:
    out: dict[str, Any] = {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "fault": {"type": "string"}},
        }}},
    }
    for model in MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sterna migration API (Coriolis v1 compatible)", "version": "1.0"},
        "paths": paths(routes),
        "components": {"schemas": schemas()},
    }
