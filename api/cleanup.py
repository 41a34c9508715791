"""Best-effort cleanup after a force-cancel: terminate skips the workflows' ``finally`` blocks,
so the API starts ``ForcedCleanupWorkflow`` with what the record DB knows of each instance."""

from __future__ import annotations

from temporalio.common import WorkflowIDConflictPolicy

from api.deps import Deps, db
from core.models import InstanceInfo, SourceSnapshot
from store.models import Migration
from workflows import ids
from workflows.cleanup import ForcedCleanupWorkflow
from workflows.types import CleanupInput, ForcedCleanup, StepInput, TaskRef


async def start_forced_cleanup(d: Deps, action_id: str, *, task_type: str, succeeded: bool,
                               execution_id: str | None = None) -> None:
    row: Migration = await db(d.store.action_row, action_id)
    items, queues = [], []
    for instance in row.instances:
        info = (row.info or {}).get(instance, {})
        step = StepInput.for_task(
            row, TaskRef(migration_id=row.id, instance=instance, task_type=task_type, execution_id=execution_id),
            export_info=InstanceInfo.model_validate(info["export_info"]) if info.get("export_info") else None,
            snapshot=SourceSnapshot.model_validate(info["snapshot"]) if info.get("snapshot") else None,
            workdir=info.get("workdir"),
        )
        items.append(CleanupInput(step=step, succeeded=succeeded))
        queues.append(info.get("host_queue") or d.settings.data_task_queue)
    await d.temporal.start_workflow(
        ForcedCleanupWorkflow.run, ForcedCleanup(items=items, queues=queues, heartbeat=d.settings.heartbeat_timeout),
        id=ids.forced_cleanup(row.id, kind=row.type, execution_id=execution_id), task_queue=d.settings.task_queue,
        static_summary=f"forced cleanup of {row.type} {row.id}",
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )

