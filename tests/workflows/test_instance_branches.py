"""``InstanceMigrationWorkflow``'s error, cancel and cleanup-failure branches, against stub activities.

The real workflow runs on a Temporal dev server with every activity replaced by a stub under its
real name (``stubs``): what is checked is the workflow's own decisions, what it records and which
steps it still runs, not the providers'. The full-stack tests reach these branches only by breaking
a real disk step (``test_hardening``); here each branch is reached on purpose, in seconds.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    TimeoutError,
    TimeoutType,
)
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import names
from core.errors import InvalidInput, ProviderTransient
from tests.workflows.stubs import (
    FAST,
    Blocking,
    Stubs,
    cancel_during,
    cancel_processed,
    fails,
    hosts_lost,
    workers,
)
from workflows import ids
from workflows.failover import HOST_FAILOVERS
from workflows.failures import root_cause
from workflows.instance import DISK_ATTEMPTS, InstanceMigrationWorkflow
from workflows.types import (
    CleanupInput,
    InstanceInput,
    MigrationInput,
    Status,
    StepInput,
    TaskRef,
    TaskType,
    TaskUpdate,
    probe_queue,
)

#: A workflow that would wait or retry forever fails its test instead of hanging it.
RUN_TIMEOUT = timedelta(seconds=60)
#: the steps pinned to the host holding the scratch copy
DISK_STEPS = (names.EXPORT_DISK, names.OS_MORPHING, names.CONVERT_DISK, names.UPLOAD_DISK, names.DEPLOY_INSTANCE)


def _input(**timeouts: float) -> InstanceInput:
    m = MigrationInput(migration_id=f"m-{uuid.uuid4()}", project_id="p", origin_endpoint_id="src",
                       destination_endpoint_id="dst", origin_type="local", destination_type="local",
                       instances=["vm-a"], skip_os_morphing=True,
                       timeouts=FAST.model_copy(update=timeouts))
    return InstanceInput(migration=m, instance="vm-a")


def _ref(inp: InstanceInput, task: TaskType) -> TaskRef:
    return TaskRef(migration_id=inp.migration.migration_id, instance=inp.instance, task_type=task)


def _updates(stubs: Stubs, name: str) -> list[TaskUpdate]:
    return [TaskUpdate.model_validate(a) for a in stubs.args(name)]


async def _start(temporal: WorkflowEnvironment, queue: str, inp: InstanceInput) -> WorkflowHandle[Any, Any]:
    return await temporal.client.start_workflow(
        InstanceMigrationWorkflow.run, inp, id=ids.instance(inp.migration.migration_id, inp.instance),
        task_queue=queue, execution_timeout=RUN_TIMEOUT)


async def _run(temporal: WorkflowEnvironment, stubs: Stubs, inp: InstanceInput) -> Any:
    async with workers(temporal.client, stubs, [InstanceMigrationWorkflow]) as queue:
        return await (await _start(temporal, queue, inp)).result()


async def _failure(temporal: WorkflowEnvironment, stubs: Stubs, inp: InstanceInput) -> WorkflowFailureError:
    with pytest.raises(WorkflowFailureError) as failed:
        await _run(temporal, stubs, inp)
    return failed.value


async def test_a_deterministic_disk_step_failure_ends_error_with_its_cause_and_cleans_up(
        temporal: WorkflowEnvironment) -> None:
    inp = _input()
    stubs = Stubs(behaviours={names.CONVERT_DISK: fails(InvalidInput("disk-0: no such format 'vhdx2'"))})
    failed = await _failure(temporal, stubs, inp)

    cause = root_cause(failed.cause or failed)
    assert isinstance(cause, ApplicationError), failed
    assert (cause.type, cause.message) == ("InvalidInput", "disk-0: no such format 'vhdx2'")
    # Non-retryable by core.errors: one attempt, though the stub left ``non_retryable`` unset.
    assert [c.attempt for c in stubs.of(names.CONVERT_DISK)] == [1]
    assert _updates(stubs, names.RECORD_TASK) == [
        TaskUpdate(task=_ref(inp, TaskType.CONVERT), status=Status.ERROR, message="disk-0: no such format 'vhdx2'")]
    assert _updates(stubs, names.RECORD_UNFINISHED_TASKS) == [
        TaskUpdate(task=_ref(inp, TaskType.CONVERT), status=Status.ERROR)]
    # Recorded first, then cleaned up, and nothing after the failed step ran.
    assert stubs.names()[-4:] == [names.CONVERT_DISK, names.RECORD_TASK, names.RECORD_UNFINISHED_TASKS,
                                  names.CLEANUP_INSTANCE]
    assert names.UPLOAD_DISK not in stubs.names() and names.DEPLOY_INSTANCE not in stubs.names()
    [cleanup] = stubs.of(names.CLEANUP_INSTANCE)
    arg = CleanupInput.model_validate(cleanup.arg)
    assert (arg.succeeded, arg.disks, arg.deployed) == (False, [], None)
    assert arg.step.task == _ref(inp, TaskType.CLEANUP)
    # on the host holding the scratch copy, where the failed step ran
    assert cleanup.queue == stubs.of(names.CONVERT_DISK)[0].queue


async def test_a_cancel_during_a_disk_step_cancels_it_cleans_up_and_ends_canceled(
        temporal: WorkflowEnvironment) -> None:
    inp = _input()
    export = Blocking()
    stubs = Stubs(behaviours={names.EXPORT_DISK: export})
    async with workers(temporal.client, stubs, [InstanceMigrationWorkflow]) as queue:
        handle = await _start(temporal, queue, inp)
        cause, status = await cancel_during(handle, export)

    assert isinstance(cause, CancelledError), cause
    assert status == WorkflowExecutionStatus.CANCELED
    assert export.cancelled.is_set(), "the running disk step never saw the cancel"
    assert _updates(stubs, names.RECORD_TASK) == [
        TaskUpdate(task=_ref(inp, TaskType.EXPORT), status=Status.CANCELED, message="Canceled by user request")]
    assert _updates(stubs, names.RECORD_UNFINISHED_TASKS) == [
        TaskUpdate(task=_ref(inp, TaskType.EXPORT), status=Status.CANCELED)]
    # The cleanup waited for the cancelled step to let go of the disk (WAIT_CANCELLATION_COMPLETED).
    assert stubs.names()[-3:] == [names.RECORD_TASK, names.RECORD_UNFINISHED_TASKS, names.CLEANUP_INSTANCE]
    assert stubs.events.index("cancelled " + names.EXPORT_DISK) < stubs.events.index(names.CLEANUP_INSTANCE)
    [cleanup] = stubs.of(names.CLEANUP_INSTANCE)
    assert CleanupInput.model_validate(cleanup.arg).succeeded is False
    assert cleanup.queue == stubs.of(names.EXPORT_DISK)[0].queue


@pytest.mark.parametrize("outcome", ["completed", "failed"])
async def test_a_failed_cleanup_is_recorded_and_leaves_the_outcome_as_it_was(
        temporal: WorkflowEnvironment, outcome: str) -> None:
    inp = _input()
    behaviours = {names.CLEANUP_INSTANCE: fails(InvalidInput("/etc is not under an allowed root"))}
    if outcome == "failed":
        behaviours[names.UPLOAD_DISK] = fails(InvalidInput("the destination refused disk-0"))
    stubs = Stubs(behaviours=behaviours)
    cleanup_error = TaskUpdate(task=_ref(inp, TaskType.CLEANUP), status=Status.ERROR,
                               message="/etc is not under an allowed root")

    if outcome == "completed":
        result = await _run(temporal, stubs, inp)
        # what the deploy step returned
        assert (result["instance"], result["id"]) == ("vm-a", "i-1"), result
        assert _updates(stubs, names.RECORD_TASK) == [cleanup_error]
        arg = CleanupInput.model_validate(stubs.args(names.CLEANUP_INSTANCE)[0])
        assert arg.succeeded and arg.deployed is not None and [d.disk_id for d in arg.disks] == ["disk-0"]
    else:
        failed = await _failure(temporal, stubs, inp)
        cause = root_cause(failed.cause or failed)
        # the upload's error, not the cleanup's
        assert isinstance(cause, ApplicationError) and cause.message == "the destination refused disk-0", failed
        assert _updates(stubs, names.RECORD_TASK) == [
            TaskUpdate(task=_ref(inp, TaskType.UPLOAD), status=Status.ERROR,
                       message="the destination refused disk-0"), cleanup_error]
    assert len(stubs.of(names.CLEANUP_INSTANCE)) == 1
    assert stubs.names()[-2:] == [names.CLEANUP_INSTANCE, names.RECORD_TASK]


async def test_a_disk_step_that_always_fails_retryably_stops_after_its_attempts(
        temporal: WorkflowEnvironment) -> None:
    inp = _input()
    stubs = Stubs(behaviours={names.EXPORT_DISK: fails(ProviderTransient("the source answered 503"))})
    failed = await _failure(temporal, stubs, inp)

    assert [c.attempt for c in stubs.of(names.EXPORT_DISK)] == list(range(1, DISK_ATTEMPTS + 1))
    assert isinstance(failed.cause, ActivityError) and failed.cause.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED
    cause = root_cause(failed.cause)
    assert isinstance(cause, ApplicationError) and cause.type == "ProviderTransient", failed
    assert _updates(stubs, names.RECORD_TASK) == [
        TaskUpdate(task=_ref(inp, TaskType.EXPORT), status=Status.ERROR, message="the source answered 503")]
    assert stubs.names()[-1] == names.CLEANUP_INSTANCE


async def test_a_lost_host_starts_the_disk_steps_again_elsewhere(temporal: WorkflowEnvironment) -> None:
    inp = _input(host_schedule_to_start=1)
    stubs = Stubs()
    hosts_lost(stubs, 1)
    result = await _run(temporal, stubs, inp)

    assert result["id"] == "i-1", result
    assert len(stubs.of(names.SNAPSHOT_INSTANCE)) == 2
    # the lost host's snapshot is released; the disk steps all ran on the second host
    [released] = stubs.args(names.RELEASE_SNAPSHOT)
    snapshot = StepInput.model_validate(released).snapshot
    assert snapshot is not None and snapshot.snapshot_id == "snap-1", released
    assert {c.queue for c in stubs.calls if c.name in DISK_STEPS} == {stubs.of(names.DEPLOY_INSTANCE)[0].queue}
    [moved] = _updates(stubs, names.RECORD_TASK)
    assert (moved.task, moved.status) == (_ref(inp, TaskType.EXPORT), Status.RUNNING)
    assert f"on another host (1 of {HOST_FAILOVERS})" in (moved.message or ""), moved


async def test_a_busy_host_is_waited_for_not_taken_for_a_lost_one(temporal: WorkflowEnvironment) -> None:
    """The host's queue goes unpolled past ``host_schedule_to_start`` (its disk slots held), but its probe
    queue answers: the step waits on the same host again, and the VM never moves (``workflows.hosts``)."""
    inp = _input(host_schedule_to_start=1)
    stubs = Stubs()
    take = stubs.answer(names.SNAPSHOT_INSTANCE)

    async def on_busy_host(arg: dict[str, Any]) -> Any:
        r = await take(arg)
        return r.model_copy(update={"host_queue": r.host_queue + "-busy"})

    stubs.behaviours[names.SNAPSHOT_INSTANCE] = on_busy_host
    async with workers(temporal.client, stubs, [InstanceMigrationWorkflow]) as queue:
        busy = queue + "-host-busy"
        async with Worker(temporal.client, task_queue=probe_queue(busy), activities=stubs.activities()):
            handle = await _start(temporal, queue, inp)
            for _ in range(300):  # the first step timed out on the busy queue and asked the host
                if stubs.of(names.HOST_ALIVE):
                    break
                await asyncio.sleep(0.1)
            # A slot frees: the host's worker polls its queue again.
            async with Worker(temporal.client, task_queue=busy, activities=stubs.activities()):
                result = await handle.result()

    assert result["id"] == "i-1", result
    assert stubs.of(names.HOST_ALIVE) and {c.queue for c in stubs.of(names.HOST_ALIVE)} == {probe_queue(busy)}
    assert len(stubs.of(names.SNAPSHOT_INSTANCE)) == 1 and not stubs.of(names.RELEASE_SNAPSHOT)
    assert {c.queue for c in stubs.calls if c.name in DISK_STEPS} == {busy}
    # Its events say why the step waits (once per timeout on the busy queue), never that the VM moved.
    waits = _updates(stubs, names.RECORD_TASK)
    assert waits and len(waits) == len(stubs.of(names.HOST_ALIVE)), waits
    for waited in waits:
        assert (waited.task, waited.status) == (_ref(inp, TaskType.EXPORT), Status.RUNNING)
        assert (waited.message or "").startswith(f"{busy} took no step within 1 s but its worker answers"), waited


async def test_a_vm_whose_hosts_keep_getting_lost_ends_error(temporal: WorkflowEnvironment) -> None:
    inp = _input(host_schedule_to_start=1)
    stubs = Stubs()
    hosts_lost(stubs, HOST_FAILOVERS + 1)
    failed = await _failure(temporal, stubs, inp)

    assert isinstance(failed.cause, ActivityError), failed
    cause = failed.cause.cause
    assert isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START, failed.cause
    assert len(stubs.of(names.SNAPSHOT_INSTANCE)) == HOST_FAILOVERS + 1
    assert len(stubs.of(names.RELEASE_SNAPSHOT)) == HOST_FAILOVERS
    assert not any(c.name in DISK_STEPS for c in stubs.calls), "a disk step ran on no host"
    updates = _updates(stubs, names.RECORD_TASK)
    assert [u.status for u in updates[:HOST_FAILOVERS]] == [Status.RUNNING] * HOST_FAILOVERS
    assert updates[HOST_FAILOVERS] == TaskUpdate(task=_ref(inp, TaskType.EXPORT), status=Status.ERROR,
                                                 message=str(cause))
    # No worker polls the lost host's queue: the cleanup runs from the shared data queue instead.
    [cleanup] = stubs.of(names.CLEANUP_INSTANCE)
    assert cleanup.queue == stubs.of(names.SNAPSHOT_INSTANCE)[0].queue, cleanup.queue


async def test_a_cancel_during_the_cleanup_waits_for_it(temporal: WorkflowEnvironment) -> None:
    inp = _input()
    cleanup = Blocking()
    stubs = Stubs(behaviours={names.CONVERT_DISK: fails(InvalidInput("disk-0: no such format 'vhdx2'")),
                              names.CLEANUP_INSTANCE: cleanup})
    async with workers(temporal.client, stubs, [InstanceMigrationWorkflow]) as queue:
        handle = await _start(temporal, queue, inp)
        await asyncio.wait_for(cleanup.started.wait(), 30)
        await handle.cancel()
        events = await cancel_processed(handle)
        # The workflow took the cancel but neither ended nor asked the cleanup to stop.
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        assert EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED not in events
        cleanup.release.set()
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()

    assert not cleanup.cancelled.is_set()
    assert stubs.events[-1] == names.CLEANUP_INSTANCE, stubs.events
    # The cancel is honoured once the cleanup is done (``workflows.shield``).
    assert isinstance(failed.value.cause, CancelledError), failed.value
