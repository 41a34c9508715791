"""Coriolis task names of transfer executions and deployments.

Here, below both the record DB (which creates the task rows) and the workflows (which run them).
Stdlib-only: workflows import it inside the sandbox.
"""

from __future__ import annotations

from enum import StrEnum


class TransferTask(StrEnum):
    """Coriolis task names of a transfer execution (reference §2.3), per instance, in order."""

    VALIDATE = "VALIDATE_TRANSFER_SOURCE_INPUTS"
    SNAPSHOT = "DEPLOY_TRANSFER_SOURCE_RESOURCES"
    REPLICATE = "REPLICATE_DISKS"
    RELEASE = "DELETE_TRANSFER_SOURCE_RESOURCES"


class DeployTask(StrEnum):
    """Coriolis task names of a deployment (reference §2.4), per instance, in order."""

    OVERLAY = "CREATE_TRANSFER_DISK_SNAPSHOTS"
    OS_MORPHING = "OS_MORPHING"
    DEPLOY = "DEPLOY_INSTANCE_RESOURCES"
    FINALIZE = "FINALIZE_INSTANCE_DEPLOYMENT"
    CLEANUP = "DELETE_TRANSFER_TARGET_DISK_SNAPSHOTS"


def deploy_tasks(skip_os_morphing: bool) -> list[str]:
    """A deployment's tasks per instance: Coriolis leaves OS_MORPHING out when it is skipped."""
    return [t.value for t in DeployTask if not (skip_os_morphing and t is DeployTask.OS_MORPHING)]


#: the event that says a migration's OS morphing did not run: on its OS_MORPHING task (one-shot), or on
#: its deployment's CREATE_TRANSFER_DISK_SNAPSHOTS (a deployment has no OS_MORPHING task then, as in
#: Coriolis), which the legacy migration view shows on OS_MORPHING (``api.live_migration_views``)
OS_MORPHING_SKIPPED = "OS morphing skipped: skip_os_morphing is set"

#: tasks that run on success and on failure (Coriolis ``on_error``)
ON_ERROR_TASKS = frozenset({TransferTask.RELEASE.value, DeployTask.CLEANUP.value})
