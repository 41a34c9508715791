"""``/v1/{project_id}/migrations``: create (two body forms), list, show, cancel, delete."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.client import WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api import deployments, endpoints, live_migrations, transfer_views, trusts, views
from api import live_migration_views as live_views
from api.cleanup import start_forced_cleanup
from api.context import RequestContext
from api.deps import Deps, body, context, db, deps, json_body
from api.errors import ApiError
from api.executions import cancel_args
from api.migration_fields import prepare
from api.schemas import MigrationCreate
from core import summary
from core.errors import NotFound
from workflows import ids, search
from workflows.migration import MigrationWorkflow
from workflows.types import (
    FINAL_STATUSES,
    TASK_ORDER,
    MigrationInput,
    Status,
    TaskType,
    Timeouts,
)


def _prepare(d: Deps, ctx: RequestContext, req: MigrationCreate, migration_id: str,
             trust_id: str | None = None) -> MigrationInput:
    p = prepare(d, ctx, req, migration_id, trust_id)
    plan = [(instance, task.value) for instance in req.instances for task in TASK_ORDER]
    row = d.store.create_migration(fields={**p.fields, "workflow_id": ids.migration(migration_id)}, plan=plan,
                                   migration_id=migration_id, new_endpoints=p.new_endpoints, marked=p.marked)
    s = d.settings
    # The environments as stored: secret values are references there, and so in the workflow's history.
    return MigrationInput(
        migration_id=migration_id, project_id=ctx.project_id, origin_endpoint_id=row.origin_endpoint_id,
        destination_endpoint_id=row.destination_endpoint_id, origin_type=p.origin_type,
        destination_type=p.destination_type,
        instances=req.instances, source_environment=row.source_environment,
        destination_environment=row.destination_environment,
        network_map=row.network_map, storage_mappings=row.storage_mappings, user_scripts=req.user_scripts or {},
        skip_os_morphing=row.skip_os_morphing, shutdown_instances=row.shutdown_instances,
        timeouts=Timeouts(heartbeat=s.heartbeat_timeout, transfer=s.transfer_timeout,
                          host_schedule_to_start=s.host_schedule_to_start_timeout,
                          retry_max_interval=s.retry_max_interval),
    )


async def _legacy_deployment(request: Request) -> bool:
    """``{"migration": {"replica_id": ...}}``: `coriolis migration deploy replica` of clients before 1.1."""
    data = await json_body(request)
    inner = data.get("migration") if isinstance(data, dict) else None
    return isinstance(inner, dict) and ("replica_id" in inner or "transfer_id" in inner)


async def _deployment_id(request: Request) -> str | None:
    """The id of ``/migrations/{id}`` when it names a deployment: old clients see those as migrations.

    Only authenticated here: the deployment's own handler enforces the deployments policy.
    """
    ctx, d = await context(request), deps(request)
    try:
        row = await db(d.store.get_action, "deployment", ctx.scope, request.path_params["id"])
    except NotFound:
        return None
    return str(row.id)


async def create(request: Request) -> JSONResponse:
    if await _legacy_deployment(request):
        return await deployments.create(request)
    ctx, d = await context(request, "migration:migrations:create"), deps(request)
    req = await body(request, "migration", MigrationCreate)
    if req.destination_endpoint_id is not None:
        # An inline destination has no stored endpoint to call yet: its first task checks it.
        dest_env = dict(req.destination_environment or {})
        await endpoints.check_destination(d, ctx, req.destination_endpoint_id, dest_env,
                                          dict(req.network_map or dest_env.pop("network_map", None) or {}))
    migration_id = str(uuid.uuid4())
    # Tokens expire during multi-hour copies: the activities act through a trust instead,
    # created now with the caller's token and deleted when the workflow ends.
    trust_id = await db(trusts.create, d, ctx)
    try:
        if live_migrations.applies(d):
            # A live_migration transfer, executed once with auto_deploy (issue 13).
            return await live_migrations.create(d, ctx, req, migration_id, trust_id)
        inp = await db(_prepare, d, ctx, req, migration_id, trust_id)
    except BaseException:
        await db(trusts.delete, d, trust_id)
        raise
    try:
        await d.temporal.start_workflow(
            MigrationWorkflow.run, inp, id=ids.migration(migration_id), task_queue=d.settings.task_queue,
            static_summary=summary.workflow("migration", inp.instances,
                                            f"{inp.origin_type} -> {inp.destination_type}"),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(search.PROJECT_ID, ctx.project_id),
                SearchAttributePair(search.MIGRATION_ID, migration_id),
                SearchAttributePair(search.MIGRATION_STATE, Status.RUNNING.value),
                SearchAttributePair(search.SOURCE_PLATFORM, inp.origin_type),
                SearchAttributePair(search.DESTINATION_PLATFORM, inp.destination_type),
                SearchAttributePair(search.INSTANCE_COUNT, len(inp.instances)),
            ]),
        )
    except RPCError as exc:
        await db(d.store.discard_migration, migration_id)
        await db(trusts.delete, d, trust_id)
        raise ApiError(503, f"The execution engine is unavailable; nothing was created: {exc.message}") from exc
    row = await db(d.store.get_migration, None, migration_id)
    return JSONResponse({"migration": views.migration(row, with_tasks=True)})


def _filter(request: Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    status = request.query_params.get("status")
    if status:
        rows = [r for r in rows if r["last_execution_status"] == status]
    marker = request.query_params.get("marker")
    if marker:
        ids = [r["id"] for r in rows]
        rows = rows[ids.index(marker) + 1:] if marker in ids else []
    limit = request.query_params.get("limit")
    if limit:
        if not limit.isdigit():
            raise ApiError(400, "'limit' must be a non-negative integer")
        rows = rows[: int(limit)]
    return rows


def _list(d: Deps, scope: str | None, detail: bool) -> list[dict[str, Any]]:
    """Migrations of both kinds (one-shot rows, and transfers made by this API), newest first."""
    rows = [views.migration(d.store.get_migration(None, r.id) if detail else r, with_tasks=detail)
            for r in d.store.list_migrations(scope)]
    rows += [live_views.migration(p, with_tasks=detail) for p in d.store.list_live_migrations(scope)]
    # The views' timestamps sort as they read (zero-padded, fixed width).
    return sorted(rows, key=lambda v: (v["created_at"] or "", v["id"]), reverse=True)


async def index(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:migrations:list"), deps(request)
    rows = _filter(request, await db(_list, d, ctx.scope, False))
    return JSONResponse({"migrations": rows})


async def detail(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:migrations:list"), deps(request)
    rows = _filter(request, await db(_list, d, ctx.scope, True))
    return JSONResponse({"migrations": rows})


async def show(request: Request) -> JSONResponse:
    if await _deployment_id(request):
        ctx, d = await context(request, "migration:deployments:show"), deps(request)
        row = await db(d.store.get_action, "deployment", ctx.scope, request.path_params["id"])
        info = await db(d.store.replicas, row.transfer_id or "")
        return JSONResponse({"migration": transfer_views.deployment(row, with_tasks=True, info=info)})
    ctx, d = await context(request, "migration:migrations:show"), deps(request)
    if await db(d.store.is_live_migration, request.path_params["id"]):
        parts = await db(d.store.live_migration, ctx.scope, request.path_params["id"])
        return JSONResponse({"migration": live_views.migration(parts, with_tasks=True)})
    row = await db(d.store.get_migration, ctx.scope, request.path_params["id"])
    return JSONResponse({"migration": views.migration(row, with_tasks=True)})


async def delete(request: Request) -> Response:
    if await _deployment_id(request):
        return await deployments.delete(request)
    ctx, d = await context(request, "migration:migrations:delete"), deps(request)
    if await db(d.store.is_live_migration, request.path_params["id"]):
        parts = await live_migrations.delete(d, ctx, request.path_params["id"])
        # The legacy workflow releases its trust as it ends; a transfer's lives as long as the transfer.
        await trusts.release_transfer(d, parts.transfer.id, parts.transfer.trust_id)
        return Response(status_code=204)
    await db(d.store.delete_migration, ctx.scope, request.path_params["id"])
    return Response(status_code=204)


async def actions(request: Request) -> Response:
    if await _deployment_id(request):
        return await deployments.actions(request)
    ctx, d = await context(request, "migration:migrations:cancel"), deps(request)
    if await db(d.store.is_live_migration, request.path_params["id"]):
        parts = await db(d.store.live_migration, ctx.scope, request.path_params["id"])
        await live_migrations.cancel(d, parts, await cancel_args(request))
        return Response(status_code=204)
    row = await db(d.store.get_migration, ctx.scope, request.path_params["id"])
    force = await cancel_args(request)
    if row.last_execution_status in FINAL_STATUSES:
        raise ApiError(400, f"Migration {row.id} is {row.last_execution_status}: there is nothing to cancel")
    if row.last_execution_status == Status.CANCELLING and not force:
        raise ApiError(400, f"Migration {row.id} is already being cancelled; use force to terminate it")
    handle: WorkflowHandle[Any, Any] = d.temporal.get_workflow_handle(row.workflow_id or ids.migration(row.id))
    try:
        if force:
            await handle.terminate("force-cancelled through the API")
        else:
            await handle.cancel()
    except RPCError as exc:
        # Already finished between our read and the request: the workflow recorded its outcome.
        current = await db(d.store.get_migration, None, row.id)
        if current.last_execution_status not in FINAL_STATUSES:
            raise ApiError(503, f"Could not cancel migration {row.id}: {exc.message}") from exc
        return Response(status_code=204)
    if force:
        await db(d.store.force_cancel_tasks, row.id)
        await db(d.store.set_migration_status, row.id, Status.CANCELED)
        await _forced_cleanup(d, row.id)
    else:
        await db(d.store.set_migration_status, row.id, Status.CANCELLING)
    return Response(status_code=204)


async def _forced_cleanup(d: Deps, migration_id: str) -> None:
    """Start the best-effort cleanup of what the terminated workflows left behind."""
    await start_forced_cleanup(d, migration_id, task_type=TaskType.CLEANUP, succeeded=False)
