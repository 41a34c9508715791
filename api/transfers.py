"""``/v1/{project_id}/transfers`` (and ``/replicas``): create, list, show, update, delete, delete-disks."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api import endpoints, environments, trusts
from api import transfer_views as views
from api.context import RequestContext
from api.deps import Deps, body, context, db, deps, endpoint_call, json_body
from api.errors import ApiError
from api.listing import ACTION_SORT, flag, page, status_filter
from api.schedules import drop_schedules
from api.transfer_schemas import TransferCreate, TransferUpdate
from api.views import unmask
from core import morph_options
from core.limits import bandwidth_limit
from core.models import CHANGE_TRACKING
from providers.base import ExportProvider, ImportProvider, ReplicaProvider, SnapshotReplicaProvider
from providers.registry import provider_class
from providers.replica_store import StoredReplicas
from store.models import Migration
from workflows.types import EndpointCall, Status

KEY = "transfer"


def key(request: Request) -> str:
    """``replica`` on the legacy ``/replicas`` routes, ``transfer`` otherwise."""
    return "replica" if "/replicas" in request.url.path else KEY


def _check_endpoints(d: Deps, ctx: RequestContext, req: TransferCreate) -> tuple[str, str, dict[str, set[str]]]:
    origin = d.store.get_endpoint(ctx.scope, req.origin_endpoint_id)
    dest = d.store.get_endpoint(ctx.scope, req.destination_endpoint_id)
    if origin.id == dest.id or (origin.type == dest.type
                                and d.store.connection_info(origin.id) == d.store.connection_info(dest.id)):
        raise ApiError(400, "SameDestination: the origin and destination endpoints must differ")
    if not issubclass(provider_class(origin.type), ExportProvider):
        raise ApiError(400, f"Provider '{origin.type}' can't be a transfer source")
    if not holds_replicas(dest.type):
        raise ApiError(400, f"Provider '{dest.type}' can't hold the replica disks of a transfer")
    return origin.id, dest.id, environments.marked(origin.type, dest.type)


def holds_replicas(platform: str) -> bool:
    """A destination that keeps replica disks: every built-in one does, a third-party one may not."""
    cls = provider_class(platform)
    return issubclass(cls, ImportProvider) and issubclass(cls, (ReplicaProvider, SnapshotReplicaProvider))


def _check_limits(source_env: dict[str, Any], dest_env: dict[str, Any]) -> None:
    """A bad ``bandwidth_limit`` or morph option is a 400 now, not a failed execution or deployment later
    (as for migrations)."""
    bandwidth_limit(source_env, "source_environment")
    bandwidth_limit(dest_env, "destination_environment")
    morph_options.check(dest_env, "destination_environment")


def _check_create(d: Deps, ctx: RequestContext, req: TransferCreate) -> tuple[str, str, dict[str, set[str]]]:
    environments.check(source_environment=req.source_environment,
                       destination_environment=req.destination_environment)
    _check_limits(req.source_environment or {}, req.destination_environment or {})
    return _check_endpoints(d, ctx, req)


def _create(d: Deps, ctx: RequestContext, req: TransferCreate, origin_id: str, dest_id: str,
            marked: dict[str, set[str]], trust_id: str | None) -> Migration:
    return d.store.create_action({
        "type": "transfer", "scenario": req.scenario or "replica", "project_id": ctx.project_id,
        "user_id": ctx.user_id, "origin_endpoint_id": origin_id, "destination_endpoint_id": dest_id,
        "instances": req.instances, "source_environment": req.source_environment or {},
        "destination_environment": req.destination_environment or {}, "network_map": req.network_map or {},
        "storage_mappings": req.storage_mappings or {}, "user_scripts": req.user_scripts or {},
        "notes": req.notes, "clone_disks": True if req.clone_disks is None else req.clone_disks,
        "skip_os_morphing": bool(req.skip_os_morphing), "last_execution_status": Status.UNEXECUTED,
        "info": {}, "trust_id": trust_id,
    }, str(uuid.uuid4()), marked)


def _view(d: Deps, row: Migration, *, info: bool = False) -> dict[str, Any]:
    executions = d.store.list_executions(row.id)
    return views.transfer(row, executions, info=d.store.replicas(row.id) if info else None)


async def create(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfers:create"), deps(request)
    req = await body(request, key(request), TransferCreate)
    origin_id, dest_id, marked = await db(_check_create, d, ctx, req)
    # Executions, scheduled ones (no caller at all) and deployments come long after the caller's token
    # expired: with Keystone they act through a trust, made now and kept until the transfer is deleted.
    # Made before the destination check so that the check acts through it too (one trust, not two).
    trust_id = await db(trusts.create, d, ctx)
    try:
        # As for a migration: a destination that checks its environment does it before anything is written.
        await endpoints.check_destination(d, ctx, dest_id, dict(req.destination_environment or {}),
                                          dict(req.network_map or {}), what="transfer", trust_id=trust_id)
        row = await db(_create, d, ctx, req, origin_id, dest_id, marked, trust_id)
    except BaseException:
        await db(trusts.delete, d, trust_id)  # a failed create leaves nothing behind
        raise
    return JSONResponse({key(request): await db(_view, d, row)})


def _list(d: Deps, ctx: RequestContext, request: Request, detail: bool) -> list[dict[str, Any]]:
    # Coriolis lists a migration's live_migration transfer with the others (one-shot migrations *are*
    # transfers since 2024-08); clients of /replicas predate that and list migrations apart.
    rows = d.store.list_actions("transfer", ctx.scope, show_deleted=flag(request, "show_deleted"),
                                status=status_filter(request), page=page(request, ACTION_SORT),
                                hide_migrations=key(request) == "replica")
    info = flag(request, "include_task_info")
    return [_view(d, r, info=info) for r in rows]


async def index(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfers:list"), deps(request)
    return JSONResponse({key(request) + "s": await db(_list, d, ctx, request, False)})


async def detail(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfers:list"), deps(request)
    return JSONResponse({key(request) + "s": await db(_list, d, ctx, request, True)})


async def show(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfers:show"), deps(request)
    row = await db(d.store.get_action, "transfer", ctx.scope, request.path_params["id"])
    # ``info`` always, on a show: coriolis 1.2.4's `transfer show --show-instances-data` reads it
    # without asking for include_task_info (later clients ask). It is sanitised either way.
    return JSONResponse({key(request): await db(_view, d, row, info=True)})


def _merge(row: Migration, req: TransferUpdate) -> dict[str, Any]:
    """Coriolis merge rules: dict.update for environments and network_map, per-key for the rest."""
    fields: dict[str, Any] = {}
    for name in ("source_environment", "destination_environment", "network_map", "storage_mappings"):
        value = getattr(req, name)
        if value is not None:
            # A client that GETs, edits and PUTs sends masked secrets back: those keep the stored ones.
            stored = getattr(row, name) or {}
            fields[name] = {**stored, **unmask(value, stored)}
    if req.user_scripts is not None:
        merged = {k: dict(v) for k, v in (row.user_scripts or {}).items() if isinstance(v, dict)}
        for section, scripts in req.user_scripts.items():
            target = merged.setdefault(section, {})
            for name, script in (scripts or {}).items():
                if script is None:
                    target.pop(name, None)
                else:
                    target[name] = script
        fields["user_scripts"] = merged
    for name in ("notes", "clone_disks", "skip_os_morphing"):
        if getattr(req, name) is not None:
            fields[name] = getattr(req, name)
    _check_limits(fields.get("source_environment", {}), fields.get("destination_environment", {}))
    return fields


def _merged(d: Deps, ctx: RequestContext, transfer_id: str, req: TransferUpdate) -> tuple[Migration, dict[str, Any]]:
    environments.check(source_environment=req.source_environment,
                       destination_environment=req.destination_environment)
    row = d.store.get_action("transfer", ctx.scope, transfer_id)
    return row, _merge(row, req)


def _update(d: Deps, ctx: RequestContext, row: Migration, fields: dict[str, Any]) -> dict[str, Any]:
    marked = environments.marked(d.store.get_endpoint(None, row.origin_endpoint_id).type,
                                 d.store.get_endpoint(None, row.destination_endpoint_id).type)
    d.store.update_transfer(ctx.scope, row.id, fields, marked)
    execution = d.store.record_done_execution(row.id, str(uuid.uuid4()), "transfer_update")
    return views.execution(execution, with_tasks=True)


async def update(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfers:update"), deps(request)
    raw = await json_body(request)
    if isinstance(raw, dict) and isinstance(raw.get(key(request)), dict):
        for fixed in ("origin_endpoint_id", "destination_endpoint_id", "instances", "scenario"):
            if fixed in raw[key(request)]:
                raise ApiError(400, f"'{fixed}' of a transfer can't be changed")
    req = await body(request, key(request), TransferUpdate)
    row, fields = await db(_merged, d, ctx, request.path_params["id"], req)
    if "destination_environment" in fields or "network_map" in fields:
        # The environment the next executions will use, stored secrets included, checked as at create.
        await endpoints.check_destination(d, ctx, row.destination_endpoint_id,
                                          fields.get("destination_environment", row.destination_environment or {}),
                                          fields.get("network_map", row.network_map or {}),
                                          what="transfer", stored=True, trust_id=row.trust_id)
    return JSONResponse({"execution": await db(_update, d, ctx, row, fields)})


async def delete(request: Request) -> Response:
    ctx, d = await context(request, "migration:transfers:delete"), deps(request)
    row = await db(d.store.get_action, "transfer", ctx.scope, request.path_params["id"])
    if await db(_in_replica_store, d, row):
        await db(d.store.check_idle, row.id)
        await remove_replicas(d, row)
    # Refused while an execution or deployment runs (they act through the trust released below).
    schedules = await db(d.store.delete_transfer, ctx.scope, row.id)
    await drop_schedules(d, schedules)
    await trusts.release_transfer(d, row.id, row.trust_id)
    return Response(status_code=204)


def _in_replica_store(d: Deps, row: Migration) -> bool:
    """The transfer has replica disks in Sterna's own store: out of everyone's reach once the transfer is
    deleted, so its delete removes them. A destination's own disks stay, as Coriolis leaves them
    (``delete-disks`` removes them first)."""
    dest = d.store.get_endpoint(None, row.destination_endpoint_id)
    return issubclass(provider_class(dest.type), StoredReplicas) and bool(d.store.replicas(row.id))


async def remove_replicas(d: Deps, row: Migration) -> list[str]:
    """Delete a transfer's replica disks at its destination, then forget them; returns what was removed.

    Also used when a migration that ran as a transfer is deleted (``api.live_migrations``). A same-cloud
    or Barbican endpoint acts through the transfer's trust (a migration's is gone by then: its own files).
    """
    removed: list[str] = await endpoint_call(d, EndpointCall(endpoint_id=row.destination_endpoint_id,
                                                             operation="delete_replica_disks",
                                                             env=row.destination_environment or {},
                                                             instance=row.id, trust_id=row.trust_id))
    await db(d.store.forget_replicas, row.id)
    # The source's change tracking for this transfer (bitmaps, baseline snapshots) is no use any more.
    for instance in row.instances:
        try:
            removed += await endpoint_call(d, EndpointCall(
                endpoint_id=row.origin_endpoint_id, operation="release_change_tracking",
                env={**(row.source_environment or {}), CHANGE_TRACKING: row.id}, instance=instance,
                trust_id=row.trust_id))
        except ApiError as exc:  # the replica is gone either way; say what stays at the source
            removed.append(f"Could not release the change tracking of {instance} at the source: {exc}")
    return removed


async def actions(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfers:delete_disks"), deps(request)
    data = await json_body(request)
    if not isinstance(data, dict) or "delete-disks" not in data:
        raise ApiError(400, 'Unknown action: expected {"delete-disks": null}')
    row = await db(d.store.get_action, "transfer", ctx.scope, request.path_params["id"])
    await db(d.store.check_idle, row.id)
    if not await db(d.store.replicas, row.id):
        raise ApiError(400, f"Transfer {row.id} has no replica disks to delete")
    removed = await remove_replicas(d, row)
    execution = await db(d.store.record_done_execution, row.id, str(uuid.uuid4()), "transfer_disks_delete")
    return JSONResponse({"execution": views.disks_deleted(execution, removed)})
