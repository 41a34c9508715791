"""The legacy ``migration`` view of a migration that runs as a transfer (``store.live_migrations``).

Clients of ``/migrations`` (and Sterna's own tests and demo) read eight tasks per instance, in the
one-shot order. Each is the task of the transfer's execution or of its deployment that does that
step; a deployment's task that does not exist yet (the execution still runs, or ended without a
deployment) is shown SCHEDULED or UNSCHEDULED under a stable id.

  legacy task                    read from
  VALIDATE_MIGRATION_INPUTS      execution  VALIDATE_TRANSFER_SOURCE_INPUTS
  CREATE_SOURCE_SNAPSHOT         execution  DEPLOY_TRANSFER_SOURCE_RESOURCES
  REPLICATE_DISKS                execution  REPLICATE_DISKS
  OS_MORPHING                    deployment OS_MORPHING (absent with skip_os_morphing: then the
                                 event that says so, from CREATE_TRANSFER_DISK_SNAPSHOTS)
  CONVERT_DISKS                  deployment CREATE_TRANSFER_DISK_SNAPSHOTS (the view of the replica)
  IMPORT_DISKS                   deployment DEPLOY_INSTANCE_RESOURCES (flatten and import)
  DEPLOY_INSTANCE_RESOURCES      deployment FINALIZE_INSTANCE_DEPLOYMENT (create, boot check)
  CLEANUP_MIGRATION_RESOURCES    deployment DELETE_TRANSFER_TARGET_DISK_SNAPSHOTS, with the events of
                                 the execution's DELETE_TRANSFER_SOURCE_RESOURCES before its own
"""

from __future__ import annotations

import uuid
from typing import Any

from api.views import _base, execution_fields, migration_view, task
from core.statuses import FINAL_STATUSES, Status
from core.tasks import OS_MORPHING_SKIPPED, DeployTask, TransferTask
from store.live_migrations import LiveMigration
from store.models import Execution, Migration, Task
from workflows.types import TASK_ORDER, TaskType

#: legacy task -> (from the deployment?, the task it is read from)
SOURCES: dict[TaskType, tuple[bool, str]] = {
    TaskType.VALIDATE: (False, TransferTask.VALIDATE),
    TaskType.SNAPSHOT: (False, TransferTask.SNAPSHOT),
    TaskType.EXPORT: (False, TransferTask.REPLICATE),
    TaskType.OS_MORPHING: (True, DeployTask.OS_MORPHING),
    TaskType.CONVERT: (True, DeployTask.OVERLAY),
    TaskType.UPLOAD: (True, DeployTask.DEPLOY),
    TaskType.BOOT: (True, DeployTask.FINALIZE),
    TaskType.CLEANUP: (True, DeployTask.CLEANUP),
}


def _find(execution: Execution | None, instance: str, task_type: str) -> Task | None:
    if execution is None:
        return None
    return next((t for t in execution.tasks if t.instance == instance and t.task_type == task_type), None)


def _waiting(parts: LiveMigration) -> str:
    """The status of a deployment task that does not exist: it may still run, or it never will."""
    e, dep = parts.execution, parts.deployment
    if dep is not None:
        return Status.UNSCHEDULED if dep.last_execution_status in FINAL_STATUSES else Status.SCHEDULED
    if e is not None and e.status in FINAL_STATUSES and e.status != Status.COMPLETED:
        return Status.UNSCHEDULED
    return Status.SCHEDULED


def _placeholder(parts: LiveMigration, instance: str, legacy: TaskType, status: str) -> dict[str, Any]:
    row = parts.transfer
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"sterna:migration/{row.id}/{instance}/{legacy.value}")),
        "created_at": _base(row)["created_at"], "updated_at": None, "deleted_at": None, "deleted": "0",
        "execution_id": parts.execution.id if parts.execution is not None else None,
        "instance": instance, "host": None, "process_id": None, "status": status,
        "task_type": legacy.value, "exception_details": None, "depends_on": [], "index": 0,
        "on_error": legacy is TaskType.CLEANUP, "events": [], "progress_updates": [],
    }


def _one(parts: LiveMigration, instance: str, legacy: TaskType) -> dict[str, Any]:
    from_deployment, name = SOURCES[legacy]
    dep_execution = parts.deployment.executions[0] if parts.deployment and parts.deployment.executions else None
    found = _find(dep_execution if from_deployment else parts.execution, instance, name)
    release = _find(parts.execution, instance, TransferTask.RELEASE) if legacy is TaskType.CLEANUP else None
    skipped = parts.deployment is not None and parts.deployment.skip_os_morphing
    if found is None:
        if legacy is TaskType.OS_MORPHING and skipped:
            # skip_os_morphing: the deployment has no such task; it is done when the disks are ready,
            # and its overlay step said why it was skipped (shown here, where the one-shot path says it).
            overlay = _find(dep_execution, instance, DeployTask.OVERLAY)
            done = overlay is not None and overlay.status == Status.COMPLETED
            view = _placeholder(parts, instance, legacy, Status.COMPLETED if done else _waiting(parts))
            said = [e for e in task(overlay)["events"] if e["message"] == OS_MORPHING_SKIPPED] if overlay else []
            view["events"] = [{**e, "index": 0} for e in said[:1]]  # one, even if the step was retried
            return view
        if release is None:
            return _placeholder(parts, instance, legacy, _waiting(parts))
        # No deployment: the execution's release is the whole cleanup so far.
        view = task(release)
        if parts.execution is not None and parts.execution.status == Status.COMPLETED:
            view["status"] = Status.SCHEDULED.value  # the deployment's cleanup is still to come
        view["task_type"] = legacy.value
        return view
    view = task(found)
    view["task_type"] = legacy.value
    if legacy is TaskType.CONVERT and skipped:
        view["events"] = [e for e in view["events"] if e["message"] != OS_MORPHING_SKIPPED]  # on OS_MORPHING
    if release is not None:
        events = [*task(release)["events"], *view["events"]]
        view["events"] = [{**e, "index": i} for i, e in enumerate(events)]
    return view


def tasks(parts: LiveMigration) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for instance in parts.transfer.instances:
        previous: str | None = None
        for legacy in TASK_ORDER:
            view = _one(parts, instance, legacy)
            view["index"], view["depends_on"] = len(out), [previous] if previous else []
            previous = view["id"]
            out.append(view)
    return out


def _executions(parts: LiveMigration) -> list[dict[str, Any]]:
    rows: list[Execution] = []
    if parts.execution is not None:
        rows.append(parts.execution)
    if parts.deployment is not None:
        rows += parts.deployment.executions
    return [execution_fields(e) for e in rows]


def migration(parts: LiveMigration, *, with_tasks: bool) -> dict[str, Any]:
    row: Migration = parts.transfer
    return migration_view(
        row, status=parts.status,
        # The migration is this transfer (same id): /transfers/{id} shows it in today's shape.
        transfer_id=row.id, clone_disks=row.clone_disks is not False,
        deployed=(parts.deployment.info or {}) if parts.deployment is not None else {},
        executions=_executions(parts), tasks=tasks(parts) if with_tasks else None)
