"""One VM of a migration: the steps in order, disk steps pinned to the host holding the scratch copy."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities import names
    from core import summary
    from core.models import DeployedInstance, DiskLocator, ImportedDisk
    from workflows.failover import failing_over, moved, release_lost_snapshot
    from workflows.failures import failure_message
    from workflows.hosts import host_lost
    from workflows.steps import SNAPSHOT_CANCEL_WAITS, Steps, record, retry
    from workflows.types import (
        CleanupInput,
        DeployInput,
        DiskStepResult,
        InstanceInput,
        MorphInput,
        MorphResult,
        Status,
        StepInput,
        TaskRef,
        TaskType,
        TaskUpdate,
        Timeouts,
        UploadResult,
    )

#: Per-disk steps: enough attempts to ride out worker kills and transient I/O errors, few enough that a
#: deterministic failure ends the migration ERROR (with its cause) within minutes, not never.
DISK_ATTEMPTS = 8
#: Heartbeat timeouts on snapshot, deploy and cleanup, and bounded per-disk attempts (issue 11).
HARDENED_TIMEOUTS = "hardening-heartbeats-and-attempts"
#: A VM whose host never takes its next disk step starts its disk steps again on another host (issue 18,
#: ``workflows.failover``; at most ``HOST_FAILOVERS`` times).
HOST_FAILOVER = "host-failover"
#: A VM that ends ERROR because its host was lost is cleaned up from the shared data queue; before,
#: the cleanup waited ``host_schedule_to_start`` (1 h) on the lost host's queue first.
CLEANUP_OFF_LOST_HOST = "cleanup-off-lost-host"
#: A cancel during the final cleanup removes the deployed instance, so a CANCELED migration leaves none (issue 11).
CANCEL_DURING_CLEANUP = "cancel-during-cleanup-removes-instance"


def _summary(inp: InstanceInput, task: TaskType) -> str:
    """What the Temporal UI shows for an activity: the instance and the Coriolis step (plus the disk)."""
    return summary.activity(inp.instance, task.value)


_retry = retry  # the name transfers and deployments import (workflows.shared)


_record = record


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
    """A live migration of one VM: a transfer execution's steps, then its deployment's, in one run.

    The disks are copied into the worker's scratch space (the one-shot replica), then morphed,
    converted and imported there as a deployment does from a replica's overlay (``workflows.steps``).
    """

    def __init__(self) -> None:
        self._current: TaskType | None = None
        #: the queue of the host holding the scratch copy, once the snapshot step has chosen it
        self._host_queue: str | None = None

    @workflow.query
    def current_task(self) -> str | None:
        return self._current.value if self._current else None

    @workflow.run
    async def run(self, inp: InstanceInput) -> dict[str, Any]:
        m, t = inp.migration, inp.migration.timeouts
        # Histories recorded before the patch replay with their old timeouts and retry policies.
        hardened = workflow.patched(HARDENED_TIMEOUTS)
        failover = workflow.patched(HOST_FAILOVER)
        steps = Steps(t, heartbeat=timedelta(seconds=t.heartbeat) if hardened else None,
                      disk_attempts=DISK_ATTEMPTS if hardened else 0,
                      snapshot_waits=workflow.patched(SNAPSHOT_CANCEL_WAITS))
        step = StepInput.for_task(m, self._ref(inp, TaskType.VALIDATE))
        imported: list[ImportedDisk] = []
        deployed: DeployedInstance | None = None
        succeeded = False
        try:
            self._current = TaskType.VALIDATE
            step.export_info = (await steps.validate(step, _summary(inp, TaskType.VALIDATE))).export_info

            async def on_lost(failovers: int) -> None:
                # The host holding this VM's scratch copy never came back: start its disk steps again
                # from a new snapshot, on whichever host takes it from the shared data queue.
                await _record(names.RECORD_TASK, TaskUpdate(
                    task=self._ref(inp, self._current or TaskType.EXPORT), status=Status.RUNNING,
                    message=moved(self._host_queue, t, failovers)), t)
                await release_lost_snapshot(steps, self._at(step, inp, TaskType.SNAPSHOT),
                                            lambda update: _record(names.RECORD_TASK, update, t),
                                            _summary(inp, TaskType.SNAPSHOT))

            try:
                morphed, imported = await failing_over(lambda _n: self._disk_steps(steps, step, inp), on_lost,
                                                       enabled=failover)
            except ActivityError as err:
                if host_lost(err) and workflow.patched(CLEANUP_OFF_LOST_HOST):
                    # Its queue has no worker: the cleanup (destination resources) runs anywhere.
                    self._host_queue = None
                raise

            assert self._host_queue is not None
            self._current = TaskType.BOOT
            result = await steps.deploy(DeployInput(step=self._at(step, inp, TaskType.BOOT), disks=imported,
                                                    bootable=morphed.bootable), self._host_queue,
                                        _summary(inp, TaskType.BOOT))
            deployed = DeployedInstance.model_validate(result)
            succeeded = True
            return result
        except BaseException as err:
            if self._current is not None:
                await record_failure(self._ref(inp, self._current), err, t)
            raise
        finally:
            self._current = TaskType.CLEANUP
            cleanup = CleanupInput(step=self._at(step, inp, TaskType.CLEANUP), disks=imported,
                                   deployed=deployed, succeeded=succeeded)

            async def cleanup_failed(err: ActivityError) -> None:
                await _record(names.RECORD_TASK, TaskUpdate(task=self._ref(inp, TaskType.CLEANUP),
                                                            status=Status.ERROR, message=failure_message(err)), t)

            try:
                await steps.cleanup(cleanup, self._host_queue, on_failure=cleanup_failed,
                                    summary=_summary(inp, TaskType.CLEANUP))
            except asyncio.CancelledError:
                # A cancel during the cleanup of a deployed instance ends the migration CANCELED: the
                # instance goes too, as after a cancel in any earlier step.
                if succeeded and workflow.patched(CANCEL_DURING_CLEANUP):
                    await steps.cleanup(cleanup.model_copy(update={"succeeded": False}), self._host_queue,
                                        on_failure=cleanup_failed, summary=_summary(inp, TaskType.CLEANUP))
                    await _record(names.RECORD_TASK, TaskUpdate(
                        task=self._ref(inp, TaskType.BOOT), status=Status.CANCELED,
                        message="Canceled by user request during the cleanup: the deployed instance was removed"), t)
                raise

    async def _disk_steps(self, steps: Steps, step: StepInput,
                          inp: InstanceInput) -> tuple[MorphResult, list[ImportedDisk]]:
        """The execution's half (snapshot, copy each disk), then the deployment's up to the import
        (OS morphing, convert, upload), all on the host that took the snapshot."""
        m = inp.migration
        self._current = TaskType.SNAPSHOT
        s = await steps.snapshot(self._at(step, inp, TaskType.SNAPSHOT), _summary(inp, TaskType.SNAPSHOT))
        host_queue, step.snapshot, step.workdir = s.host_queue, s.snapshot, s.workdir
        self._host_queue = host_queue

        self._current = TaskType.EXPORT
        exported = await steps.per_disk(names.EXPORT_DISK, self._at(step, inp, TaskType.EXPORT),
                                        s.snapshot.disks, host_queue, DiskStepResult,
                                        summary=_summary(inp, TaskType.EXPORT))

        self._current = TaskType.OS_MORPHING
        morphed = await steps.morph(
            MorphInput(step=self._at(step, inp, TaskType.OS_MORPHING), disks=[r.disk for r in exported],
                       skip=m.skip_os_morphing, user_scripts=m.user_scripts, origin_type=m.origin_type),
            host_queue, _summary(inp, TaskType.OS_MORPHING))

        self._current = TaskType.CONVERT
        disks = await steps.per_disk(names.CONVERT_DISK, self._at(step, inp, TaskType.CONVERT), morphed.disks,
                                     host_queue, DiskLocator, summary=_summary(inp, TaskType.CONVERT))

        self._current = TaskType.UPLOAD
        uploads = await steps.per_disk(names.UPLOAD_DISK, self._at(step, inp, TaskType.UPLOAD), disks,
                                       host_queue, UploadResult, summary=_summary(inp, TaskType.UPLOAD))
        return morphed, [u.disk for u in uploads]

    @staticmethod
    def _ref(inp: InstanceInput, task: TaskType) -> TaskRef:
        return TaskRef(migration_id=inp.migration.migration_id, instance=inp.instance, task_type=task)

    def _at(self, step: StepInput, inp: InstanceInput, task: TaskType) -> StepInput:
        return step.model_copy(update={"task": self._ref(inp, task)})
