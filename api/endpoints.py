"""``/v1/{project_id}/endpoints``: cloud connections, their validation and inventory."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import views
from api.context import RequestContext
from api.deps import Deps, body, context, db, deps, endpoint_call, json_body
from api.errors import ApiError
from api.schemas import EndpointCreate, EndpointUpdate
from core.keystone import needs_keystone
from core.secrets import refuse_references, schema_secret_keys, seal_inline
from providers.base import EndpointProvider
from providers.registry import provider_class
from workflows.types import EndpointCall


def check_type(platform: str) -> None:
    """Unknown platform -> 400, before anything is written."""
    cls = provider_class(platform)
    if not issubclass(cls, EndpointProvider):
        raise ApiError(400, f"Provider '{platform}' does not support endpoints")


async def _view(request: Request, endpoint_id: str, rule: str = "migration:endpoints:show") -> dict[str, Any]:
    ctx, d = await context(request, rule), deps(request)
    row = await db(d.store.get_endpoint, ctx.scope, endpoint_id)
    return views.endpoint(row, await db(d.store.connection_info, row.id))


async def create(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:endpoints:create"), deps(request)
    req = await body(request, "endpoint", EndpointCreate)
    await db(check_type, req.type)
    missing = [k for k in provider_class(req.type).connection_info_schema().get("required", [])  # type: ignore[attr-defined]
               if k not in req.connection_info]
    if missing and "secret_ref" not in req.connection_info and "secret_id" not in req.connection_info:
        raise ApiError(400, f"connection_info for '{req.type}' lacks: {', '.join(missing)}")
    row = await db(d.store.create_endpoint, project_id=ctx.project_id, user_id=ctx.user_id, name=req.name,
                   type=req.type, connection_info=req.connection_info, description=req.description,
                   mapped_regions=req.mapped_regions)
    return JSONResponse({"endpoint": views.endpoint(row, req.connection_info)})


async def index(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:endpoints:list"), deps(request)
    rows = await db(d.store.list_endpoints, ctx.scope)
    out = [views.endpoint(r, await db(d.store.connection_info, r.id)) for r in rows]
    return JSONResponse({"endpoints": out})


async def show(request: Request) -> JSONResponse:
    return JSONResponse({"endpoint": await _view(request, request.path_params["id"])})


async def update(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:endpoints:update"), deps(request)
    endpoint_id = request.path_params["id"]
    req = await body(request, "endpoint", EndpointUpdate)
    fields = req.model_dump(exclude_unset=True, exclude_none=True)
    if "connection_info" in fields:
        # A client that GETs, edits and PUTs sends masked values back: keep the stored ones.
        fields["connection_info"] = views.unmask(fields["connection_info"],
                                                 await db(d.store.connection_info, endpoint_id))
    await db(d.store.update_endpoint, ctx.scope, endpoint_id, fields)
    return JSONResponse({"endpoint": await _view(request, endpoint_id, "migration:endpoints:update")})


async def delete(request: Request) -> Response:
    ctx, d = await context(request, "migration:endpoints:delete"), deps(request)
    await db(d.store.delete_endpoint, ctx.scope, request.path_params["id"])
    return Response(status_code=204)


async def actions(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:endpoints:validate_connection"), deps(request)
    endpoint_id = request.path_params["id"]
    await db(d.store.get_endpoint, ctx.scope, endpoint_id)
    data = await json_body(request)
    if not isinstance(data, dict) or "validate-connection" not in data:
        raise ApiError(400, 'Unknown action: expected {"validate-connection": null}')
    try:
        await _trusted_call(d, ctx, EndpointCall(endpoint_id=endpoint_id, operation="validate"))
    except ApiError as exc:
        if exc.status in (503, 504):  # the engine or the workers are down: not an answer about the endpoint
            raise
        # Coriolis answers 200 with valid=false: the call worked, the connection did not.
        return JSONResponse({"validate-connection": {"valid": False, "message": exc.message}})
    return JSONResponse({"validate-connection": {"valid": True, "message": None}})


def _env(request: Request) -> dict[str, Any]:
    raw = request.query_params.get("env")
    if not raw:
        return {}
    try:
        env = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, "'env' must be URL-safe base64 of a JSON object") from exc
    if not isinstance(env, dict):
        raise ApiError(400, "'env' must be URL-safe base64 of a JSON object")
    return env


_RULES = {"list_instances": "list_instances", "get_instance": "get_instance", "list_networks": "list_networks",
          "list_storage": "list_storage", "destination_options": "list_destination_options",
          "source_options": "list_source_options"}


async def _call(request: Request, operation: str, **extra: Any) -> Any:
    ctx, d = await context(request, f"migration:endpoints:{_RULES[operation]}"), deps(request)
    endpoint_id = request.path_params["id"]
    await db(d.store.get_endpoint, ctx.scope, endpoint_id)
    env = _env(request)
    refuse_references(env, "'env'")
    # The call's input is in the workflow history: its secrets travel there encrypted, never as they are.
    sealed = seal_inline(env, lambda value: d.store.box.seal({"value": value}))
    return await _trusted_call(d, ctx, EndpointCall(endpoint_id=endpoint_id, operation=operation,
                                                    env=sealed, **extra))


async def check_destination(d: Deps, ctx: RequestContext, endpoint_id: str, env: dict[str, Any],
                            network_map: dict[str, Any], *, what: str = "migration", stored: bool = False,
                            trust_id: str | None = None) -> None:
    """A destination that can check its environment against its cloud (``CHECKS_AT_CREATE``) does it
    now, on a worker: a bad secret, an unknown size or a missing subnet is a 400 before anything is
    written or started. The destination's own failures (unreachable, throttled) stay 502.

    ``stored``: ``env`` is an action's stored environment with a client's changes merged in (a
    transfer's update). Its references are then the store's own, and the worker resolves them; the
    client's part was refused references before the merge (``environments.check``).
    ``trust_id``: the action's own trust, which the check then acts through.
    """
    from providers.base import ImportProvider
    from providers.registry import provider_class

    endpoint = await db(d.store.get_endpoint, ctx.scope, endpoint_id)
    cls = provider_class(endpoint.type)
    if not issubclass(cls, ImportProvider) or not cls.CHECKS_AT_CREATE:
        return
    whole = {**env, "network_map": network_map}
    if not stored:
        refuse_references(whole, "'destination_environment'")
    # The call's input is in the workflow history: secrets travel there encrypted, as for _call.
    sealed = seal_inline(whole, lambda value: d.store.box.seal({"value": value}),
                         schema_secret_keys(cls.destination_environment_schema()))
    try:
        await _trusted_call(d, ctx, EndpointCall(endpoint_id=endpoint_id, operation="check_destination_environment",
                                                 env=sealed, trust_id=trust_id))
    except ApiError as exc:
        if exc.status < 500:
            raise ApiError(400, f"The destination refused the {what}: {exc.message}") from exc
        raise


async def _trusted_call(d: Deps, ctx: RequestContext, call: EndpointCall) -> Any:
    """Run an endpoint call; a Barbican or same-cloud endpoint gets a trust for its duration.

    The worker can't use the caller's token (it would have to cross Temporal), so, as for a
    migration, it acts through a trust that exists only while the call runs; or through the
    ``call.trust_id`` of the action it checks for, which outlives the call.
    """
    if call.trust_id is not None:
        return await endpoint_call(d, call)
    trust_id = None
    if d.keystone is not None and ctx.auth_token and ctx.user_id and ctx.token_project_id:
        row = await db(d.store.get_endpoint, None, call.endpoint_id)
        if needs_keystone(row.type, await db(d.store.connection_info, call.endpoint_id)):
            trust_id = await db(d.keystone.create_trust, ctx.auth_token, ctx.user_id, ctx.token_project_id,
                                ctx.roles)
    try:
        return await endpoint_call(d, call.model_copy(update={"trust_id": trust_id}))
    finally:
        if trust_id is not None and d.keystone is not None:
            await db(d.keystone.delete_trust, trust_id)


async def instances(request: Request) -> JSONResponse:
    found = await _call(request, "list_instances", name_filter=request.query_params.get("name"))
    marker, limit = request.query_params.get("marker"), request.query_params.get("limit")
    if marker:
        ids = [i["id"] for i in found]
        found = found[ids.index(marker) + 1:] if marker in ids else []
    if limit:
        try:
            found = found[: int(limit)]
        except ValueError as exc:
            raise ApiError(400, "'limit' must be an integer") from exc
    return JSONResponse({"instances": found})


async def instance(request: Request) -> JSONResponse:
    raw = request.path_params["instance_id"]
    try:
        name = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ApiError(400, "Instance ids in paths are URL-safe base64 of the provider's instance id") from exc
    return JSONResponse({"instance": await _call(request, "get_instance", instance=name)})


async def networks(request: Request) -> JSONResponse:
    return JSONResponse({"networks": await _call(request, "list_networks")})


async def storage(request: Request) -> JSONResponse:
    return JSONResponse({"storage": await _call(request, "list_storage")})


async def destination_options(request: Request) -> JSONResponse:
    return JSONResponse({"destination_options": await _call(request, "destination_options")})


async def source_options(request: Request) -> JSONResponse:
    return JSONResponse({"source_options": await _call(request, "source_options")})
