"""``/transfers/{transfer_id}/executions``: execute, list, detail, show, delete, cancel."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from temporalio.client import WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api import transfer_views as views
from api.cleanup import start_forced_cleanup
from api.deps import Deps, body, context, db, deps, json_body, timeouts
from api.errors import ApiError
from api.listing import EXECUTION_SORT, page, status_filter
from api.schemas import CancelArgs
from core import summary
from store.models import Execution
from workflows import ids
from workflows.transfer import TransferExecutionWorkflow
from workflows.transfer_types import DeployTask, TransferExecutionInput, TransferTask
from workflows.types import FINAL_STATUSES, Status


def _transfer_id(request: Request) -> str:
    return str(request.path_params["transfer_id"])


async def create(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfer_executions:create"), deps(request)
    from api.transfer_schemas import ExecutionCreate

    req = await body(request, "execution", ExecutionCreate)
    transfer = await db(d.store.get_action, "transfer", ctx.scope, _transfer_id(request))
    execution_id = str(uuid.uuid4())
    workflow_id = ids.execution(transfer.id, execution_id)
    execution = await db(d.store.create_execution, transfer.id, execution_id, instances=list(transfer.instances),
                         task_types=[t.value for t in TransferTask], workflow_id=workflow_id)
    inp = TransferExecutionInput(transfer_id=transfer.id, execution_id=execution_id,
                                 shutdown_instances=bool(req.shutdown_instances), auto_deploy=bool(req.auto_deploy),
                                 timeouts=timeouts(d))
    try:
        await d.temporal.start_workflow(TransferExecutionWorkflow.run, inp, id=workflow_id,
                                        task_queue=d.settings.task_queue,
                                        static_summary=summary.workflow("transfer execution",
                                                                        list(transfer.instances)),
                                        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING)
    except RPCError as exc:
        await db(d.store.set_execution_status, transfer.id, execution_id, Status.ERROR)
        raise ApiError(503, f"The execution engine is unavailable: {exc.message}") from exc
    return JSONResponse({"execution": views.execution(execution, with_tasks=True)})


def _list(d: Deps, request: Request, scope: str | None, detail: bool) -> list[dict[str, Any]]:
    transfer = d.store.get_action("transfer", scope, _transfer_id(request))
    rows = d.store.list_executions(transfer.id, status_filter(request), page(request, EXECUTION_SORT))
    return [views.execution(r, with_tasks=detail) for r in rows]


async def index(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfer_executions:list"), deps(request)
    return JSONResponse({"executions": await db(_list, d, request, ctx.scope, False)})


async def detail(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfer_executions:list"), deps(request)
    return JSONResponse({"executions": await db(_list, d, request, ctx.scope, True)})


def _get(d: Deps, request: Request, scope: str | None) -> Execution:
    transfer = d.store.get_action("transfer", scope, _transfer_id(request))
    return d.store.get_execution(transfer.id, request.path_params["id"])


async def show(request: Request) -> JSONResponse:
    ctx, d = await context(request, "migration:transfer_executions:show"), deps(request)
    row = await db(_get, d, request, ctx.scope)
    return JSONResponse({"execution": views.execution(row, with_tasks=True)})


async def delete(request: Request) -> Response:
    ctx, d = await context(request, "migration:transfer_executions:delete"), deps(request)
    row = await db(_get, d, request, ctx.scope)
    await db(d.store.delete_execution, row.action_id, row.id)
    return Response(status_code=204)


async def cancel_args(request: Request) -> bool:
    data = await json_body(request)
    if not isinstance(data, dict) or "cancel" not in data:
        raise ApiError(400, 'Unknown action: expected {"cancel": null} or {"cancel": {"force": true}}')
    raw = data["cancel"]
    if raw is not None and not isinstance(raw, dict):
        raise ApiError(400, '"cancel" takes null or {"force": bool}')
    return CancelArgs.model_validate(raw or {}).force


async def cancel_execution(d: Deps, row: Execution, force: bool, what: str, shown_id: str | None = None) -> None:
    """Cancel (or, with force, terminate) the workflow of an execution; shared with deployments.

    ``shown_id`` is the id errors name (a deployment's, not its execution's).
    """
    name = shown_id or row.id
    if row.status in FINAL_STATUSES:
        raise ApiError(400, f"{what} {name} is {row.status}: there is nothing to cancel")
    if row.status == Status.CANCELLING and not force:
        raise ApiError(400, f"{what} {name} is already being cancelled; use force to terminate it")
    if row.workflow_id is None:
        raise ApiError(400, f"{what} {name} has not started yet")
    handle: WorkflowHandle[Any, Any] = d.temporal.get_workflow_handle(row.workflow_id)
    try:
        if force:
            await handle.terminate("force-cancelled through the API")
        else:
            await handle.cancel()
    except RPCError as exc:
        current = await db(d.store.find_execution, row.id)
        if current is None or current.status not in FINAL_STATUSES:
            raise ApiError(503, f"Could not cancel {what.lower()} {name}: {exc.message}") from exc
        return
    if force:
        await db(d.store.force_cancel_execution_tasks, row.id)
        await db(d.store.set_execution_status, row.action_id, row.id, Status.CANCELED)
        # A deployment's cleanup removes its half-made instance; a transfer's only releases.
        deployment = row.type == "deployment"
        await start_forced_cleanup(d, row.action_id, execution_id=row.id, succeeded=not deployment,
                                   task_type=DeployTask.CLEANUP if deployment else TransferTask.RELEASE)
    else:
        await db(d.store.set_execution_status, row.action_id, row.id, Status.CANCELLING)


async def actions(request: Request) -> Response:
    ctx, d = await context(request, "migration:transfer_executions:cancel"), deps(request)
    row = await db(_get, d, request, ctx.scope)
    await cancel_execution(d, row, await cancel_args(request), "Execution")
    return Response(status_code=204)
