"""``POST /migrations`` as Coriolis runs it since 2024: a ``live_migration`` transfer, one execution of
it with ``auto_deploy``, and the deployment that execution triggers (issue 13).

Ids: the migration's id *is* the transfer's (``store.live_migrations``), so ``/transfers/{id}`` shows
the same action in today's shape and ``/migrations/{id}`` in the legacy one
(``api.live_migration_views``). The execution's workflow keeps the migration's workflow id
(``migration-<id>``), so ``temporal workflow list`` finds a migration where it always did; its
per-instance children and the deployment have the ids every transfer gives them.

The migration's options go where Coriolis puts them: ``shutdown_instances`` on the execution,
``skip_os_morphing``, ``user_scripts`` and ``clone_disks`` on the transfer, from which the auto
deployment takes its defaults. On unless ``STERNA_MIGRATIONS_ON_TRANSFERS`` is false.
"""

from __future__ import annotations

import uuid

from starlette.responses import JSONResponse
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api import live_migration_views as views
from api.context import RequestContext
from api.deps import Deps, db, timeouts
from api.errors import ApiError
from api.executions import cancel_execution
from api.migration_fields import prepare
from api.schemas import MigrationCreate
from api.transfers import holds_replicas, remove_replicas
from core import summary
from core.errors import InvalidState
from store.live_migrations import LiveMigration
from workflows import ids, search
from workflows.transfer import TransferExecutionWorkflow
from workflows.transfer_types import TransferExecutionInput, TransferTask
from workflows.types import FINAL_STATUSES, Status


def applies(d: Deps) -> bool:
    """Whether a migration runs as a transfer: ``STERNA_MIGRATIONS_ON_TRANSFERS``. Every built-in
    destination keeps replica disks (OpenStack, Azure and GCP in Sterna's replica store)."""
    return d.settings.migrations_on_transfers


def _write(d: Deps, ctx: RequestContext, req: MigrationCreate, migration_id: str, execution_id: str,
           trust_id: str | None) -> tuple[LiveMigration, str, str]:
    p = prepare(d, ctx, req, migration_id, trust_id)
    if not holds_replicas(p.destination_type):  # a third-party destination: say so before anything is written
        raise ApiError(400, f"Provider '{p.destination_type}' can't hold the replica disks a migration is made of")
    parts = d.store.create_live_migration(
        {**p.fields, "clone_disks": True}, migration_id=migration_id, execution_id=execution_id,
        task_types=[t.value for t in TransferTask], workflow_id=ids.migration(migration_id),
        new_endpoints=p.new_endpoints, marked=p.marked)
    return parts, p.origin_type, p.destination_type


async def create(d: Deps, ctx: RequestContext, req: MigrationCreate, migration_id: str,
                 trust_id: str | None) -> JSONResponse:
    """Write and start it; nothing stays written when the engine refuses the start (the caller
    deletes the trust on any error)."""
    execution_id = str(uuid.uuid4())
    parts, origin_type, dest_type = await db(_write, d, ctx, req, migration_id, execution_id, trust_id)
    inp = TransferExecutionInput(transfer_id=migration_id, execution_id=execution_id,
                                 shutdown_instances=bool(req.shutdown_instances), auto_deploy=True,
                                 timeouts=timeouts(d))
    try:
        await d.temporal.start_workflow(
            TransferExecutionWorkflow.run, inp, id=ids.migration(migration_id), task_queue=d.settings.task_queue,
            static_summary=summary.workflow("migration", req.instances, f"{origin_type} -> {dest_type}"),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=TypedSearchAttributes([
                SearchAttributePair(search.PROJECT_ID, ctx.project_id),
                SearchAttributePair(search.MIGRATION_ID, migration_id),
                SearchAttributePair(search.MIGRATION_STATE, Status.RUNNING.value),
                SearchAttributePair(search.SOURCE_PLATFORM, origin_type),
                SearchAttributePair(search.DESTINATION_PLATFORM, dest_type),
                SearchAttributePair(search.INSTANCE_COUNT, len(req.instances)),
            ]),
        )
    except RPCError as exc:
        await db(d.store.discard_migration, migration_id)
        raise ApiError(503, f"The execution engine is unavailable; nothing was created: {exc.message}") from exc
    return JSONResponse({"migration": views.migration(parts, with_tasks=True)})


async def cancel(d: Deps, parts: LiveMigration, force: bool) -> None:
    """Cancel whichever runs now: the deployment once it exists, else the execution."""
    mid = parts.transfer.id
    status = parts.status
    if status in FINAL_STATUSES:
        raise ApiError(400, f"Migration {mid} is {status}: there is nothing to cancel")
    if status == Status.CANCELLING and not force:
        raise ApiError(400, f"Migration {mid} is already being cancelled; use force to terminate it")
    if parts.deployment is not None and parts.deployment.executions:
        await cancel_execution(d, parts.deployment.executions[0], force, "Migration", shown_id=mid)
        return
    if parts.execution is None or parts.execution.status == Status.COMPLETED:
        # The execution is done and is writing its deployment: there is nothing to cancel for a moment.
        raise InvalidState(f"Migration {mid} is starting its deployment; cancel it again in a few seconds")
    await cancel_execution(d, parts.execution, force, "Migration", shown_id=mid)


async def delete(d: Deps, ctx: RequestContext, migration_id: str) -> LiveMigration:
    """Refused while it runs; otherwise its replica disks go first (a live migration deploys once,
    nothing else will use them), then the transfer, its deployment and inline endpoints."""
    parts = await db(d.store.live_migration, ctx.scope, migration_id)
    parts.check_deletable()  # and again in the transaction that deletes
    if await db(d.store.replicas, migration_id):
        await remove_replicas(d, parts.transfer)
    deleted: LiveMigration = await db(d.store.delete_live_migration, ctx.scope, migration_id)
    return deleted
