"""One VM of a migration: the steps in order, disk steps pinned to the host holding the scratch copy."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, TimeoutError, TimeoutType, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities import names
    from core.errors import NON_RETRYABLE_TYPES
    from core.models import DeployedInstance, DiskLocator, ImportedDisk
    from workflows.failures import failure_message
    from workflows.shield import shielded
    from workflows.types import (
        CleanupInput,
        DeployInput,
        DiskStepInput,
        DiskStepResult,
        InstanceInput,
        MorphInput,
        MorphResult,
        SnapshotResult,
        Status,
        StepInput,
        TaskRef,
        TaskType,
        TaskUpdate,
        Timeouts,
        UploadResult,
        ValidateResult,
    )

#: Per-disk steps: enough attempts to ride out worker kills and transient I/O errors, few enough that a
#: deterministic failure ends the migration ERROR (with its cause) within minutes, not never.
DISK_ATTEMPTS = 8
#: Heartbeat timeouts on snapshot, deploy and cleanup, and bounded per-disk attempts (issue 11).
HARDENED_TIMEOUTS = "hardening-heartbeats-and-attempts"
#: A VM whose host never takes its next disk step starts its disk steps again on another host (issue 18).
HOST_FAILOVER = "host-failover"
#: How many times one VM may change hosts that way before it ends ERROR.
HOST_FAILOVERS = 2


def _summary(inp: InstanceInput, task: TaskType, disk: str | None = None) -> str:
    """What the Temporal UI shows for an activity: the instance, the Coriolis step, the disk."""
    return f"{inp.instance}: {task.value}" + (f" {disk}" if disk else "")


def _host_lost(err: ActivityError) -> bool:
    """No worker polled the pinned host's queue within ``host_schedule_to_start``: the host is gone."""
    cause = err.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START


def _retry(t: Timeouts, attempts: int = 0) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=t.retry_max_interval),
        maximum_attempts=attempts,
        non_retryable_error_types=NON_RETRYABLE_TYPES,
    )


async def _record(name: str, arg: Any, t: Timeouts) -> None:
    """A record activity that a workflow cancel must not abandon (``workflows.shield``)."""
    await shielded(workflow.execute_activity(
        name, arg, start_to_close_timeout=timedelta(seconds=60), retry_policy=_retry(t, 20),
    ))


async def record_failure(task: TaskRef, err: BaseException, t: Timeouts) -> None:
    """The failed (or cancelled) task and every task after it get their final status.

    Migrations, transfer executions and deployments (``workflows.shared``) record them alike.
    """
    cancelled = is_cancelled_exception(err)
    status = Status.CANCELED if cancelled else Status.ERROR
    message = "Canceled by user request" if cancelled else failure_message(err)
    await _record(names.RECORD_TASK, TaskUpdate(task=task, status=status, message=message), t)
    await _record(names.RECORD_UNFINISHED_TASKS, TaskUpdate(task=task, status=status), t)


@workflow.defn
class InstanceMigrationWorkflow:
    def __init__(self) -> None:
        self._current: TaskType | None = None
        self._hardened = False
        self._failover = False
        #: the queue of the host holding the scratch copy, once the snapshot step has chosen it
        self._host_queue: str | None = None

    @workflow.query
    def current_task(self) -> str | None:
        return self._current.value if self._current else None

    @workflow.run
    async def run(self, inp: InstanceInput) -> dict[str, Any]:
        m, t = inp.migration, inp.migration.timeouts
        # Histories recorded before the patch replay with their old timeouts and retry policies.
        self._hardened = workflow.patched(HARDENED_TIMEOUTS)
        self._failover = workflow.patched(HOST_FAILOVER)
        step = StepInput.for_task(m, self._ref(inp, TaskType.VALIDATE))
        host_queue: str | None = None
        imported: list[ImportedDisk] = []
        deployed: DeployedInstance | None = None
        succeeded = False
        try:
            self._current = TaskType.VALIDATE
            v: ValidateResult = await workflow.execute_activity(
                names.VALIDATE_INSTANCE, step, result_type=ValidateResult, summary=_summary(inp, TaskType.VALIDATE),
                start_to_close_timeout=timedelta(seconds=t.short), retry_policy=_retry(t, 5),
            )
            step.export_info = v.export_info

            failovers = 0
            while True:
                try:
                    morphed, imported = await self._disk_steps(step, inp, t)
                    break
                except ActivityError as err:
                    # The host holding this VM's scratch copy never came back: start its disk steps again
                    # from a new snapshot, on whichever host takes it from the shared data queue.
                    if not (self._failover and _host_lost(err) and failovers < HOST_FAILOVERS):
                        raise
                    failovers += 1
                    lost = self._current
                    await _record(names.RECORD_TASK, TaskUpdate(
                        task=self._ref(inp, lost or TaskType.EXPORT), status=Status.RUNNING,
                        message=f"No worker of {self._host_queue} took the step within "
                                f"{t.host_schedule_to_start:.0f} s: starting this instance's disk steps again "
                                f"on another host ({failovers} of {HOST_FAILOVERS})"), t)
                    await self._release_snapshot(step, inp, t)

            host_queue = self._host_queue
            self._current = TaskType.BOOT
            result: dict[str, Any] = await workflow.execute_activity(
                names.DEPLOY_INSTANCE,
                DeployInput(step=self._at(step, inp, TaskType.BOOT), disks=imported, bootable=morphed.bootable),
                result_type=dict, task_queue=host_queue, summary=_summary(inp, TaskType.BOOT),
                start_to_close_timeout=timedelta(seconds=t.transfer), heartbeat_timeout=self._heartbeat(t),
                schedule_to_start_timeout=timedelta(seconds=t.host_schedule_to_start),
                retry_policy=_retry(t, 3),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            deployed = DeployedInstance.model_validate(result)
            succeeded = True
            return result
        except BaseException as err:
            if self._current is not None:
                await record_failure(self._ref(inp, self._current), err, t)
            raise
        finally:
            self._current = TaskType.CLEANUP
            host_queue = self._host_queue
            cleanup = CleanupInput(step=self._at(step, inp, TaskType.CLEANUP), disks=imported,
                                   deployed=deployed, succeeded=succeeded)
            await self._cleanup(cleanup, host_queue, inp, t)

    async def _disk_steps(self, step: StepInput, inp: InstanceInput,
                          t: Timeouts) -> tuple[MorphResult, list[ImportedDisk]]:
        """Snapshot on the shared data queue, then export, morph, convert and upload on that host."""
        m = inp.migration
        self._current = TaskType.SNAPSHOT
        s: SnapshotResult = await workflow.execute_activity(
            names.SNAPSHOT_INSTANCE, self._at(step, inp, TaskType.SNAPSHOT), result_type=SnapshotResult,
            task_queue=workflow.info().task_queue + "-data", summary=_summary(inp, TaskType.SNAPSHOT),
            start_to_close_timeout=timedelta(seconds=t.transfer), heartbeat_timeout=self._heartbeat(t),
            retry_policy=_retry(t, 5),
        )
        host_queue, step.snapshot, step.workdir = s.host_queue, s.snapshot, s.workdir
        self._host_queue = host_queue

        self._current = TaskType.EXPORT
        exported = await self._per_disk(
            names.EXPORT_DISK, step, inp, TaskType.EXPORT, s.snapshot.disks, host_queue, t, DiskStepResult
        )
        disks = [r.disk for r in exported]

        self._current = TaskType.OS_MORPHING
        morphed: MorphResult = await workflow.execute_activity(
            names.OS_MORPHING,
            MorphInput(step=self._at(step, inp, TaskType.OS_MORPHING), disks=disks,
                       skip=m.skip_os_morphing, user_scripts=m.user_scripts, origin_type=m.origin_type),
            result_type=MorphResult, task_queue=host_queue, summary=_summary(inp, TaskType.OS_MORPHING),
            start_to_close_timeout=timedelta(seconds=t.transfer),
            heartbeat_timeout=timedelta(seconds=max(t.heartbeat, 30)),
            schedule_to_start_timeout=timedelta(seconds=t.host_schedule_to_start),
            retry_policy=_retry(t, 3),
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )

        disks = morphed.disks
        self._current = TaskType.CONVERT
        disks = await self._per_disk(
            names.CONVERT_DISK, step, inp, TaskType.CONVERT, disks, host_queue, t, DiskLocator
        )

        self._current = TaskType.UPLOAD
        uploads = await self._per_disk(
            names.UPLOAD_DISK, step, inp, TaskType.UPLOAD, disks, host_queue, t, UploadResult
        )
        imported = [u.disk for u in uploads]

        return morphed, imported

    async def _release_snapshot(self, step: StepInput, inp: InstanceInput, t: Timeouts) -> None:
        """Best effort: the lost host's source snapshot (a vSphere snapshot stays on the VM otherwise)."""
        try:
            await workflow.execute_activity(
                names.RELEASE_SNAPSHOT, self._at(step, inp, TaskType.SNAPSHOT),
                task_queue=workflow.info().task_queue + "-data", summary=_summary(inp, TaskType.SNAPSHOT),
                start_to_close_timeout=timedelta(seconds=t.short), heartbeat_timeout=self._heartbeat(t),
                retry_policy=_retry(t, 3),
            )
        except ActivityError as err:
            await _record(names.RECORD_TASK, TaskUpdate(
                task=self._ref(inp, TaskType.SNAPSHOT), status=Status.RUNNING,
                message=f"The lost host's source snapshot was not removed: {failure_message(err)}"), t)

    async def _per_disk(
        self, name: str, step: StepInput, inp: InstanceInput, task: TaskType, disks: list[DiskLocator],
        host_queue: str, t: Timeouts, result_type: type[Any],
    ) -> list[Any]:
        here = self._at(step, inp, task)
        # Disks of one VM move in parallel; each is its own activity with its own checkpoint.
        return list(await asyncio.gather(*(
            workflow.execute_activity(
                name, DiskStepInput(step=here, disk=disk), result_type=result_type, task_queue=host_queue,
                summary=_summary(inp, task, disk.disk_id),
                start_to_close_timeout=timedelta(seconds=t.transfer),
                heartbeat_timeout=timedelta(seconds=t.heartbeat),
                schedule_to_start_timeout=timedelta(seconds=t.host_schedule_to_start),
                retry_policy=_retry(t, DISK_ATTEMPTS if self._hardened else 0),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            for disk in disks
        )))

    async def _cleanup(self, inp: CleanupInput, host_queue: str | None, mig: InstanceInput, t: Timeouts) -> None:
        queue = host_queue or workflow.info().task_queue + "-data"

        async def cleanup_failed(err: ActivityError) -> None:
            await _record(names.RECORD_TASK, TaskUpdate(task=self._ref(mig, TaskType.CLEANUP),
                                                        status=Status.ERROR, message=failure_message(err)), t)

        # Shielded: a second cancel request must not abandon the scratch or target files.
        await shielded(workflow.execute_activity(
            names.CLEANUP_INSTANCE, inp, task_queue=queue, summary=_summary(mig, TaskType.CLEANUP),
            start_to_close_timeout=timedelta(seconds=t.short), heartbeat_timeout=self._heartbeat(t),
            schedule_to_start_timeout=timedelta(seconds=t.host_schedule_to_start),
            retry_policy=_retry(t, 10),
        ), on_failure=cleanup_failed)

    def _heartbeat(self, t: Timeouts) -> timedelta | None:
        """A dead worker is noticed after one heartbeat timeout, not after the whole start-to-close."""
        return timedelta(seconds=t.heartbeat) if self._hardened else None

    @staticmethod
    def _ref(inp: InstanceInput, task: TaskType) -> TaskRef:
        return TaskRef(migration_id=inp.migration.migration_id, instance=inp.instance, task_type=task)

    def _at(self, step: StepInput, inp: InstanceInput, task: TaskType) -> StepInput:
        return step.model_copy(update={"task": self._ref(inp, task)})
