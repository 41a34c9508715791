"""The per-instance steps, each scheduled in one place for migrations and deployments.

A migration's instance (``InstanceMigrationWorkflow``) is a live-migration execution followed by
its deployment: validate -> snapshot -> copy each disk -> OS morphing -> convert -> upload ->
deploy -> cleanup. A deployment (``DeploymentInstanceWorkflow``) runs the same second half on a
copy-on-write view of a transfer's replica disks. The workflows choose the order, the task names
(through the ``StepInput`` they pass) and the retry budget; how a step is scheduled lives here.

Scheduling options are not part of the determinism check, the activity names and their order
are: a change here must keep each caller's sequence of activities.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities import names
    from core import summary as summaries
    from core.errors import NON_RETRYABLE_TYPES
    from core.models import DiskLocator
    from workflows.hosts import on_host
    from workflows.shield import shielded
    from workflows.types import (
        CleanupInput,
        DeployInput,
        DiskStepInput,
        MorphInput,
        MorphResult,
        SnapshotResult,
        Status,
        StepInput,
        TaskUpdate,
        Timeouts,
        ValidateResult,
    )


#: A cancel waits for the snapshot step to stop its copy and remove it (issue 11, reproducer 6); before,
#: the cleanup ran while the copy went on, and knew no folder to remove.
SNAPSHOT_CANCEL_WAITS = "snapshot-cancel-waits"
#: Validation and a deployment's overlay heartbeat too, so a worker killed during them is noticed
#: within a heartbeat timeout, not after ``Timeouts.short`` (600 s).
SHORT_STEPS_HEARTBEAT = "short-steps-heartbeat"


def short_step_heartbeat(t: Timeouts) -> timedelta | None:
    """The heartbeat timeout of a short step, for histories recorded since ``SHORT_STEPS_HEARTBEAT``."""
    return timedelta(seconds=t.heartbeat) if workflow.patched(SHORT_STEPS_HEARTBEAT) else None


def snapshot_cancellation(patched: bool) -> workflow.ActivityCancellationType:
    """How a cancel treats the snapshot step; ``patched``: ``workflow.patched(SNAPSHOT_CANCEL_WAITS)``."""
    return (workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED if patched
            else workflow.ActivityCancellationType.TRY_CANCEL)


def retry(t: Timeouts, attempts: int = 0) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=t.retry_max_interval),
        maximum_attempts=attempts,
        non_retryable_error_types=NON_RETRYABLE_TYPES,
    )


async def record(name: str, arg: Any, t: Timeouts) -> None:
    """A record activity that a workflow cancel must not abandon (``workflows.shield``)."""
    await shielded(workflow.execute_activity(
        name, arg, start_to_close_timeout=timedelta(seconds=60), retry_policy=retry(t, 20),
    ))


@dataclass
class Steps:
    """How one instance's steps are scheduled; ``heartbeat`` None only for pre-hardening histories."""

    t: Timeouts
    #: heartbeat timeout of snapshot, deploy and cleanup
    heartbeat: timedelta | None
    #: attempts of each per-disk step (0: unbounded, for histories recorded before issue 11)
    disk_attempts: int
    #: attempts of the shielded cleanup
    cleanup_attempts: int = 10
    #: a cancel waits for the snapshot step to end (False only for histories from before that patch)
    snapshot_waits: bool = False

    def _host(self, queue: str) -> dict[str, Any]:
        """A step pinned to the host that holds the instance's scratch files; a cancel waits for it."""
        return dict(task_queue=queue, start_to_close_timeout=timedelta(seconds=self.t.transfer),
                    schedule_to_start_timeout=timedelta(seconds=self.t.host_schedule_to_start),
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED)

    def _note(self, step: StepInput) -> Callable[[str], Awaitable[None]]:
        """An event on ``step``'s task (why a pinned step still waits, ``workflows.hosts``)."""
        async def note(message: str) -> None:
            await record(names.RECORD_TASK, TaskUpdate(task=step.task, status=Status.RUNNING, message=message), self.t)

        return note

    async def validate(self, step: StepInput, summary: str | None = None) -> ValidateResult:
        result: ValidateResult = await workflow.execute_activity(
            names.VALIDATE_INSTANCE, step, result_type=ValidateResult, summary=summary,
            start_to_close_timeout=timedelta(seconds=self.t.short), retry_policy=retry(self.t, 5),
            heartbeat_timeout=short_step_heartbeat(self.t),
        )
        return result

    async def snapshot(self, step: StepInput, summary: str | None = None) -> SnapshotResult:
        result: SnapshotResult = await workflow.execute_activity(
            names.SNAPSHOT_INSTANCE, step, result_type=SnapshotResult, summary=summary,
            task_queue=workflow.info().task_queue + "-data",
            start_to_close_timeout=timedelta(seconds=self.t.transfer), heartbeat_timeout=self.heartbeat,
            retry_policy=retry(self.t, 5), cancellation_type=snapshot_cancellation(self.snapshot_waits),
        )
        return result

    async def per_disk(self, name: str, step: StepInput, disks: list[DiskLocator], queue: str,
                       result_type: type[Any], flatten: bool = False, summary: str | None = None) -> list[Any]:
        """Disks of one VM move in parallel; each is its own activity with its own checkpoint.

        ``summary``, for the Temporal UI, gets each disk's id appended."""
        def start(disk: DiskLocator) -> Awaitable[Any]:
            return workflow.execute_activity(
                name, DiskStepInput(step=step, disk=disk, flatten=flatten), result_type=result_type,
                summary=summaries.of_disk(summary, disk.disk_id),
                heartbeat_timeout=timedelta(seconds=self.t.heartbeat),
                retry_policy=retry(self.t, self.disk_attempts), **self._host(queue),
            )

        note = self._note(step)
        return list(await asyncio.gather(*(on_host(partial(start, disk), queue, self.t, note) for disk in disks)))

    async def morph(self, inp: MorphInput, queue: str, summary: str | None = None) -> MorphResult:
        result: MorphResult = await on_host(lambda: workflow.execute_activity(
            names.OS_MORPHING, inp, result_type=MorphResult, retry_policy=retry(self.t, 3), summary=summary,
            heartbeat_timeout=timedelta(seconds=max(self.t.heartbeat, 30)), **self._host(queue),
        ), queue, self.t, self._note(inp.step))
        return result

    async def deploy(self, inp: DeployInput, queue: str, summary: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await on_host(lambda: workflow.execute_activity(
            names.DEPLOY_INSTANCE, inp, result_type=dict, retry_policy=retry(self.t, 3), summary=summary,
            heartbeat_timeout=self.heartbeat, **self._host(queue),
        ), queue, self.t, self._note(inp.step))
        return result

    async def release_snapshot(self, step: StepInput, summary: str | None = None) -> None:
        """The source snapshot of an attempt whose host was lost (a vSphere snapshot stays on the VM otherwise)."""
        await workflow.execute_activity(
            names.RELEASE_SNAPSHOT, step, task_queue=workflow.info().task_queue + "-data", summary=summary,
            start_to_close_timeout=timedelta(seconds=self.t.short), heartbeat_timeout=self.heartbeat,
            retry_policy=retry(self.t, 3),
        )

    async def cleanup(self, inp: CleanupInput, queue: str | None,
                      on_failure: Callable[[ActivityError], Awaitable[None]] | None = None,
                      summary: str | None = None) -> None:
        """Shielded: a second cancel request must not abandon the scratch or target files."""
        def start() -> Awaitable[None]:
            return workflow.execute_activity(
                names.CLEANUP_INSTANCE, inp, task_queue=queue or workflow.info().task_queue + "-data",
                summary=summary, start_to_close_timeout=timedelta(seconds=self.t.short),
                heartbeat_timeout=self.heartbeat,
                schedule_to_start_timeout=timedelta(seconds=self.t.host_schedule_to_start),
                retry_policy=retry(self.t, self.cleanup_attempts),
            )

        await shielded(on_host(start, queue, self.t, self._note(inp.step)) if queue else start(),
                       on_failure=on_failure)
