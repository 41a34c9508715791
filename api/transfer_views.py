"""Coriolis views of transfers, executions, deployments and schedules: every field, null when unknown."""

from __future__ import annotations

from typing import Any

from api.response_models import DeploymentView, DisksDeletedView, ExecutionView, ScheduleView, TransferView, answer
from api.views import _base, execution_fields, mask_secrets, task, ts
from store.models import Execution, Migration, ReplicaDisk, TransferSchedule


def _execution(row: Execution, *, with_tasks: bool) -> dict[str, Any]:
    view = execution_fields(row)
    if with_tasks:
        # Coriolis hides the on-error-only tasks that never had to run; Sterna has none.
        view["tasks"] = [task(t) for t in sorted(row.tasks, key=lambda t: t.index)]
    return view


def execution(row: Execution, *, with_tasks: bool) -> dict[str, Any]:
    return answer(ExecutionView, _execution(row, with_tasks=with_tasks))


def disks_deleted(row: Execution, removed: list[str]) -> dict[str, Any]:
    """The ``delete-disks`` action's execution, with what it removed (or could not)."""
    return answer(DisksDeletedView, {**_execution(row, with_tasks=True), "removed": removed})


def _info(row: Migration, replicas: list[ReplicaDisk]) -> dict[str, Any]:
    """Per-instance task info (``include_task_info``), sanitised: digests are never shown."""
    info: dict[str, Any] = {}
    for instance in row.instances:
        data = dict((row.info or {}).get(instance, {}))
        data["volumes_info"] = [
            {"disk_id": r.disk_id, "volume_id": r.path, "size_bytes": r.size_bytes, "format": r.format,
             "replica_state": {"trusted": r.trusted, "chunk_size": r.chunk_size, "chunks": ["<redacted>"],
                               "last_execution_id": r.last_execution_id}}
            for r in replicas if r.instance == instance
        ]
        info[instance] = mask_secrets(data)
    return info


def _action(row: Migration) -> dict[str, Any]:
    return {
        **_base(row),
        "base_id": row.id,
        "user_id": row.user_id,
        "project_id": row.project_id,
        "origin_endpoint_id": row.origin_endpoint_id,
        "destination_endpoint_id": row.destination_endpoint_id,
        "origin_minion_pool_id": None,
        "destination_minion_pool_id": None,
        "instance_osmorphing_minion_pool_mappings": {},
        "instances": list(row.instances),
        "notes": row.notes,
        "last_execution_status": row.last_execution_status,
        "source_environment": mask_secrets(row.source_environment or {}),
        "destination_environment": mask_secrets(row.destination_environment or {}),
        "network_map": row.network_map or {},
        "storage_mappings": row.storage_mappings or {},
        "user_scripts": row.user_scripts or {},
        "clone_disks": row.clone_disks,
        "skip_os_morphing": row.skip_os_morphing,
        "clustered": len(row.instances) > 1,
        "reservation_id": None,
        "trust_id": row.trust_id,
        "transfer_result": {n: d.get("deployed") for n, d in (row.info or {}).items() if d.get("deployed")} or None,
    }


def transfer(row: Migration, executions: list[Execution], *, info: list[ReplicaDisk] | None = None,
             with_executions: bool = True) -> dict[str, Any]:
    view = {**_action(row), "type": "transfer", "scenario": row.scenario}
    if with_executions:
        view["executions"] = [execution_fields(e) for e in sorted(executions, key=lambda e: e.number)]
    if info is not None:
        view["info"] = _info(row, info)
    return answer(TransferView, view)


def deployment(row: Migration, *, with_tasks: bool, info: list[ReplicaDisk] | None = None) -> dict[str, Any]:
    view = {
        **_action(row),
        "type": "deployment",
        "transfer_id": row.transfer_id,
        # Old clients read a deployment of a replica through these names.
        "replica_id": row.transfer_id,
        "transfer_scenario_type": row.scenario,
        "deployer_id": row.deployer_id,
        "shutdown_instances": row.shutdown_instances,
        "executions": [execution_fields(e) for e in row.executions],
    }
    if with_tasks:
        view["tasks"] = [task(t) for e in row.executions for t in sorted(e.tasks, key=lambda t: t.index)]
    if info is not None:
        view["info"] = _info(row, info)
    return answer(DeploymentView, view)


def schedule(row: TransferSchedule) -> dict[str, Any]:
    return answer(ScheduleView, {
        **_base(row),
        "transfer_id": row.transfer_id,
        "replica_id": row.transfer_id,
        "schedule": row.schedule or {},
        "expiration_date": ts(row.expiration_date),
        "enabled": row.enabled,
        "shutdown_instance": row.shutdown_instance,
        "auto_deploy": row.auto_deploy,
        "trust_id": None,
    })
