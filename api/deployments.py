"""``/v1/{project_id}/deployments``: create from a transfer, list, detail, show, delete, cancel."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api import transfer_views as views
from api.context import RequestContext
from api.deps import Deps, body, context, db, deps, timeouts
from api.errors import ApiError
from api.executions import cancel_args, cancel_execution
from api.listing import ACTION_SORT, flag, page, status_filter
from api.transfer_schemas import DeploymentCreate
from store.models import Migration
from workflows import ids
from workflows.deployment import DeploymentWorkflow
from workflows.transfer_types import DeploymentInput
from workflows.types import Status


def _create(d: Deps, ctx: RequestContext, req: DeploymentCreate) -> Migration:
    transfer_id = req.transfer_id or req.replica_id or ""
    transfer = d.store.get_action("transfer", ctx.scope, transfer_id)
    # null means the transfer's default deployment options (Coriolis 1.1.x)
    skip = transfer.skip_os_morphing if req.skip_os_morphing is None else req.skip_os_morphing
    # coriolis 1.2.x always sends {"global": {}, "instances": {}}: sections without a script
    # override nothing, the transfer's scripts stand.
    scripts = req.user_scripts if req.user_scripts and any(req.user_scripts.values()) else None
    deployment_id = str(uuid.uuid4())
    row = d.store.create_deployment(
        transfer.id, deployment_id, str(uuid.uuid4()), workflow_id=ids.deployment(deployment_id),
        user_id=ctx.user_id, project_id=ctx.scope,
        options={"skip_os_morphing": skip, "user_scripts": scripts,
                 "clone_disks": transfer.clone_disks if req.clone_disks is None else req.clone_disks},
        force=bool(req.force),
    )
    return row


async def start(d: Deps, deployment_id: str) -> None:
    try:
        await d.temporal.start_workflow(
            DeploymentWorkflow.run, DeploymentInput(deployment_id=deployment_id, timeouts=timeouts(d)),
            id=ids.deployment(deployment_id), task_queue=d.settings.task_queue,
            static_summary=f"deployment {deployment_id}",
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )
    except RPCError as exc:
        row = await db(d.store.get_action, "deployment", None, deployment_id)
        await db(d.store.set_execution_status, row.id, row.executions[0].id, Status.ERROR)
        raise ApiError(503, f"The execution engine is unavailable: {exc.message}") from exc


async def create(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:deployments:create"), deps(request)
    legacy = request.url.path.rstrip("/").endswith("/migrations")
    req = await body(request, "migration" if legacy else "deployment", DeploymentCreate)
    row = await db(_create, d, ctx, req)
    await start(d, row.id)
    return JSONResponse({"migration" if legacy else "deployment": views.deployment(row, with_tasks=True)})


def _list(d: Deps, ctx: RequestContext, request: Request, detail: bool) -> list[dict[str, Any]]:
    rows = d.store.list_actions("deployment", ctx.scope, show_deleted=flag(request, "show_deleted"),
                                status=status_filter(request), page=page(request, ACTION_SORT))
    info = flag(request, "include_task_info")
    return [views.deployment(r, with_tasks=detail, info=d.store.replicas(r.transfer_id or "") if info else None)
            for r in rows]


async def index(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:deployments:list"), deps(request)
    return JSONResponse({"deployments": await db(_list, d, ctx, request, False)})


async def detail(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:deployments:list"), deps(request)
    return JSONResponse({"deployments": await db(_list, d, ctx, request, True)})


async def show(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:deployments:show"), deps(request)
    row = await db(d.store.get_action, "deployment", ctx.scope, request.path_params["id"])
    # ``info`` always, on a show: `coriolis deployment show --show-instances-data` (1.2.x) reads it
    # without sending include_task_info.
    info = await db(d.store.replicas, row.transfer_id or "")
    return JSONResponse({"deployment": views.deployment(row, with_tasks=True, info=info)})


async def delete(request: Request) -> Response:
    ctx, d = await context(request, "migration:deployments:delete"), deps(request)
    await db(d.store.delete_deployment, ctx.scope, request.path_params["id"])
    return Response(status_code=204)


async def actions(request: Request) -> Response:
    ctx, d = await context(request, "migration:deployments:cancel"), deps(request)
    row = await db(d.store.get_action, "deployment", ctx.scope, request.path_params["id"])
    await cancel_execution(d, row.executions[0], await cancel_args(request), "Deployment", shown_id=row.id)
    return Response(status_code=204)
