"""Coriolis resource views: every documented field present, ``null`` when unknown.

A public builder gives one resource's answer, through its model (``api.response_models.answer``);
the parts nested in it (tasks, executions) are checked with the resource that holds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from api.response_models import EndpointView, MigrationView, answer
from core.secrets import REFERENCE_KEYS, is_reference, is_secret_key
from store.models import Endpoint, Execution, Migration, Task

#: substrings that mask a value by its key's name (older than ``core.secrets``' rule, which adds to it)
SECRET_WORDS = ("password", "secret", "token", "key", "credential", "private", "pkey", "passphrase")
MASK = "***"


def ts(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value else None


def _base(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": ts(row.created_at),
        "updated_at": ts(row.updated_at),
        "deleted_at": ts(row.deleted_at),
        "deleted": "1" if row.deleted else "0",
    }


def _secret_name(name: str) -> bool:
    return is_secret_key(name) or any(word in name.lower() for word in SECRET_WORDS)


def mask_secrets(value: Any) -> Any:
    """Replace credential-looking values and stored secret references, at any depth.

    ``secret_ref``/``secret_id`` are Barbican references, not secrets. A name matches by
    ``core.secrets.is_secret_key`` or by a ``SECRET_WORDS`` substring.
    """
    if is_reference(value):
        return MASK
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if str(k).lower() in REFERENCE_KEYS:
                out[k] = v
            elif _secret_name(str(k)) and not isinstance(v, (dict, list, bool)):
                out[k] = MASK
            else:
                out[k] = mask_secrets(v)
        return out
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def unmask(new: Any, old: Any) -> Any:
    """On update, a value still equal to the mask keeps its stored original."""
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: (old.get(k) if v == MASK and k in old else unmask(v, old.get(k))) for k, v in new.items()}
    return new


def endpoint(row: Endpoint, connection_info: dict[str, Any]) -> dict[str, Any]:
    return answer(EndpointView, {
        **_base(row),
        "user_id": row.user_id,
        "project_id": row.project_id,
        "name": row.name,
        "type": row.type,
        "description": row.description,
        "connection_info": mask_secrets(connection_info),
        "mapped_regions": list(row.mapped_regions or []),
    })


def execution_fields(row: Execution) -> dict[str, Any]:
    """An execution without its tasks: a part of its action's view, or the start of its own."""
    return {**_base(row), "action_id": row.action_id, "status": row.status, "number": row.number, "type": row.type}


def task(row: Task) -> dict[str, Any]:
    return {
        **_base(row),
        "execution_id": row.execution_id,
        "instance": row.instance,
        "host": row.host,
        "process_id": row.process_id,
        "status": row.status,
        "task_type": row.task_type,
        "exception_details": row.exception_details,
        "depends_on": list(row.depends_on or []),
        "index": row.index,
        "on_error": row.on_error,
        "events": [
            {**_base(e), "task_id": e.task_id, "level": e.level, "index": e.index, "message": e.message}
            for e in row.events
        ],
        "progress_updates": [
            {**_base(p), "task_id": p.task_id, "index": p.index, "current_step": p.current_step,
             "total_steps": p.total_steps, "message": p.message}
            for p in row.progress_updates
        ],
    }


def migration(row: Migration, *, with_tasks: bool) -> dict[str, Any]:
    return migration_view(
        row, status=row.last_execution_status, transfer_id=None, clone_disks=True, deployed=row.info or {},
        executions=[execution_fields(e) for e in row.executions],
        tasks=[task(t) for e in row.executions for t in e.tasks] if with_tasks else None)


def migration_view(row: Migration, *, status: str | None, transfer_id: str | None, clone_disks: bool,
                   deployed: Mapping[str, Any], executions: list[dict[str, Any]],
                   tasks: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The legacy ``/migrations`` shape, whichever engine ran the migration: its own workflow (above),
    or a transfer's execution and deployment (``api.live_migration_views``), which say what differs."""
    view: dict[str, Any] = {
        **_base(row),
        "user_id": row.user_id,
        "project_id": row.project_id,
        "type": "migration",
        "origin_endpoint_id": row.origin_endpoint_id,
        "destination_endpoint_id": row.destination_endpoint_id,
        "origin_minion_pool_id": None,
        "destination_minion_pool_id": None,
        "instance_osmorphing_minion_pool_mappings": {},
        "instances": list(row.instances),
        "notes": row.notes,
        "status": status,
        "last_execution_status": status,
        "source_environment": mask_secrets(row.source_environment or {}),
        "destination_environment": mask_secrets(row.destination_environment or {}),
        "network_map": row.network_map or {},
        "storage_mappings": row.storage_mappings or {},
        "user_scripts": row.user_scripts or {},
        "shutdown_instances": row.shutdown_instances,
        "skip_os_morphing": row.skip_os_morphing,
        "replication_count": row.replication_count,
        "replica_id": None,
        "transfer_id": transfer_id,
        "reservation_id": None,
        "clone_disks": clone_disks,
        "transfer_result": {name: data.get("deployed") for name, data in deployed.items() if data.get("deployed")},
        "executions": executions,
    }
    if tasks is not None:
        view["tasks"] = tasks
    return answer(MigrationView, view)
