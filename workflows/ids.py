"""Workflow ids: business ids, so a retried POST finds its execution and the Web UI reads well.

A migration's children share its prefix (``migration-<id>/...``): one visibility query or
``temporal workflow list`` prefix finds all of them. Ids are part of histories and of the
record DB (``migrations.workflow_id``): change a format only with a migration of the stored ids.
Stdlib-only: workflows import it inside the sandbox.
"""

from __future__ import annotations


def migration(migration_id: str) -> str:
    return f"migration-{migration_id}"


def instance(migration_id: str, instance_name: str) -> str:
    """The child ``InstanceMigrationWorkflow`` that moves one VM."""
    return f"{migration(migration_id)}/vm-{instance_name}"


def execution(transfer_id: str, execution_id: str) -> str:
    """A ``TransferExecutionWorkflow``: one run of a transfer."""
    return f"transfer-{transfer_id}/execution-{execution_id}"


def deployment(deployment_id: str) -> str:
    """A ``DeploymentWorkflow``."""
    return f"deployment-{deployment_id}"


def schedule(schedule_id: str) -> str:
    """The Temporal schedule of a transfer schedule."""
    return f"transfer-schedule-{schedule_id}"


def execution_instance(execution_id: str, instance_name: str) -> str:
    """The per-instance child of a transfer execution or of a deployment (by its execution)."""
    return f"execution-{execution_id}/vm-{instance_name}"


def forced_cleanup(action_id: str, *, kind: str = "migration", execution_id: str | None = None) -> str:
    """The cleanup after a force-cancel of a migration, a transfer execution or a deployment."""
    suffix = f"/{execution_id}" if execution_id else ""
    return f"{kind}-{action_id}{suffix}/forced-cleanup"


def endpoint_call(endpoint_id: str, operation: str, nonce: str) -> str:
    """One API provider call; ``nonce`` keeps concurrent identical calls apart."""
    return f"endpoint-{endpoint_id}-{operation}-{nonce}"
