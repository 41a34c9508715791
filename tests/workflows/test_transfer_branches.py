"""Transfer executions' and deployments' failure and cancel branches, against stub activities.

As ``test_instance_branches`` does for migrations: the real parent and per-instance workflows run
on a dev server, every activity is a stub under its real name (``stubs``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError, TimeoutType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import names
from core.errors import InvalidInput, NotFound
from tests.workflows.deciding import Deciding, Gathering, Instance
from tests.workflows.stubs import (
    FAST,
    Blocking,
    Stubs,
    cancel_during,
    cancel_processed,
    fails,
    hosts_lost,
    stepped_past,
    workers,
)
from workflows import ids
from workflows.deployment import DeploymentInstanceWorkflow, DeploymentWorkflow
from workflows.failover import HOST_FAILOVERS
from workflows.failures import root_cause
from workflows.transfer import TransferExecutionWorkflow, TransferInstanceWorkflow
from workflows.transfer_types import (
    DeploymentInput,
    DeployTask,
    FinishExecution,
    TransferExecutionInput,
    TransferTask,
)
from workflows.types import CleanupInput, DiskStepInput, Status, StepInput, TaskRef, TaskUpdate, Timeouts

WORKFLOWS = [TransferExecutionWorkflow, TransferInstanceWorkflow, DeploymentWorkflow, DeploymentInstanceWorkflow]
#: a lost host is noticed within a second
LOSES_HOSTS = FAST.model_copy(update={"host_schedule_to_start": 1})
#: the steps of a deployment pinned to the overlay's host
DEPLOY_STEPS = (names.OS_MORPHING, names.CONVERT_DISK, names.UPLOAD_DISK, names.DEPLOY_INSTANCE)
#: A workflow that would wait or retry forever fails its test instead of hanging it.
RUN_TIMEOUT = timedelta(seconds=60)


def _updates(stubs: Stubs, name: str) -> list[TaskUpdate]:
    return [TaskUpdate.model_validate(a) for a in stubs.args(name)]


def _assert_finished_last(stubs: Stubs, ref: TaskRef, status: Status) -> None:
    """The execution is recorded ``status`` once, after the instance's cleanup."""
    finished = [FinishExecution.model_validate(a) for a in stubs.args(names.FINISH_TRANSFER_EXECUTION)]
    assert finished == [FinishExecution(action_id=ref.migration_id, execution_id=ref.execution_id or "",
                                        status=status)]
    assert stubs.names()[-2:] == [names.CLEANUP_INSTANCE, names.FINISH_TRANSFER_EXECUTION]


async def _start_transfer(client: Client, queue: str,
                          timeouts: Timeouts = FAST) -> tuple[WorkflowHandle[Any, Any], TaskRef]:
    """An execution of a one-VM transfer; and the ref of that VM's tasks, without the task type."""
    transfer, execution = f"t-{uuid.uuid4()}", f"x-{uuid.uuid4()}"
    handle = await client.start_workflow(
        TransferExecutionWorkflow.run,
        TransferExecutionInput(transfer_id=transfer, execution_id=execution, timeouts=timeouts),
        id=ids.execution(transfer, execution), task_queue=queue, execution_timeout=RUN_TIMEOUT)
    return handle, TaskRef(migration_id=transfer, instance="vm-a", task_type="", execution_id=execution)


async def _start_deployment(client: Client, queue: str,
                            timeouts: Timeouts = FAST) -> tuple[WorkflowHandle[Any, Any], TaskRef]:
    deployment = f"d-{uuid.uuid4()}"
    handle = await client.start_workflow(
        DeploymentWorkflow.run, DeploymentInput(deployment_id=deployment, timeouts=timeouts),
        id=ids.deployment(deployment), task_queue=queue, execution_timeout=RUN_TIMEOUT)
    # the execution id is the one the stub of begin_deployment gives
    return handle, TaskRef(migration_id=deployment, instance="vm-a", task_type="",
                           execution_id=deployment + "-execution")


def _at(ref: TaskRef, task: str) -> TaskRef:
    return ref.model_copy(update={"task_type": task})


async def _instance_failure(client: Client, ref: TaskRef) -> BaseException:
    """The root cause the per-instance child workflow failed with."""
    assert ref.execution_id is not None
    with pytest.raises(WorkflowFailureError) as failed:
        await client.get_workflow_handle(ids.execution_instance(ref.execution_id, ref.instance)).result()
    return root_cause(failed.value.cause or failed.value)


async def test_a_failed_replication_ends_the_execution_error_after_releasing_the_snapshot(
        temporal: WorkflowEnvironment) -> None:
    stubs = Stubs(behaviours={names.REPLICATE_DISK: fails(NotFound("the replica of disk-0 is gone"))})
    async with workers(temporal.client, stubs, WORKFLOWS) as queue:
        handle, ref = await _start_transfer(temporal.client, queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        cause = await _instance_failure(temporal.client, ref)

    parent = failed.value.cause
    assert isinstance(parent, ApplicationError) and parent.type == "InstanceFailed", failed.value
    assert parent.message.startswith("1 of 1 instance(s) failed"), parent.message
    assert isinstance(cause, ApplicationError) and (cause.type, cause.message) == (
        "NotFound", "the replica of disk-0 is gone")
    assert [c.attempt for c in stubs.of(names.REPLICATE_DISK)] == [1]
    assert _updates(stubs, names.RECORD_TASK) == [TaskUpdate(task=_at(ref, TransferTask.REPLICATE),
                                                             status=Status.ERROR,
                                                             message="the replica of disk-0 is gone")]
    # The release runs on the snapshot's host and deletes nothing of the destination (succeeded).
    [release] = stubs.of(names.CLEANUP_INSTANCE)
    arg = CleanupInput.model_validate(release.arg)
    assert (arg.step.task, arg.succeeded) == (_at(ref, TransferTask.RELEASE), True)
    assert release.queue == stubs.of(names.REPLICATE_DISK)[0].queue
    _assert_finished_last(stubs, ref, Status.ERROR)


async def test_a_cancelled_execution_cancels_the_replication_releases_and_ends_canceled(
        temporal: WorkflowEnvironment) -> None:
    replicate = Blocking()
    stubs = Stubs(behaviours={names.REPLICATE_DISK: replicate})
    async with workers(temporal.client, stubs, WORKFLOWS) as queue:
        handle, ref = await _start_transfer(temporal.client, queue)
        cause, status = await cancel_during(handle, replicate)
        child = await _instance_failure(temporal.client, ref)

    assert isinstance(cause, CancelledError), cause
    assert status == WorkflowExecutionStatus.CANCELED
    assert isinstance(child, CancelledError), child
    assert replicate.cancelled.is_set(), "the running replication never saw the cancel"
    assert _updates(stubs, names.RECORD_TASK) == [TaskUpdate(task=_at(ref, TransferTask.REPLICATE),
                                                             status=Status.CANCELED,
                                                             message="Canceled by user request")]
    assert stubs.events.index("cancelled " + names.REPLICATE_DISK) < stubs.events.index(names.CLEANUP_INSTANCE)
    _assert_finished_last(stubs, ref, Status.CANCELED)


async def test_a_failed_deploy_ends_the_deployment_error_and_cleans_up_what_was_imported(
        temporal: WorkflowEnvironment) -> None:
    stubs = Stubs(behaviours={names.DEPLOY_INSTANCE: fails(InvalidInput("flavor m1.tiny is too small"))})
    async with workers(temporal.client, stubs, WORKFLOWS) as queue:
        handle, ref = await _start_deployment(temporal.client, queue)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        cause = await _instance_failure(temporal.client, ref)

    parent = failed.value.cause
    assert isinstance(parent, ApplicationError) and parent.type == "InstanceFailed", failed.value
    assert isinstance(cause, ApplicationError) and cause.message == "flavor m1.tiny is too small", cause
    assert [c.attempt for c in stubs.of(names.DEPLOY_INSTANCE)] == [1]
    assert _updates(stubs, names.RECORD_TASK) == [TaskUpdate(task=_at(ref, DeployTask.FINALIZE),
                                                             status=Status.ERROR,
                                                             message="flavor m1.tiny is too small")]
    [cleanup] = stubs.of(names.CLEANUP_INSTANCE)
    arg = CleanupInput.model_validate(cleanup.arg)
    # the imported disks go to the provider's cleanup, which removes them (not succeeded)
    assert (arg.step.task, arg.succeeded, arg.deployed) == (_at(ref, DeployTask.CLEANUP), False, None)
    assert [d.disk_id for d in arg.disks] == ["disk-0"]
    assert cleanup.queue == stubs.of(names.DEPLOY_INSTANCE)[0].queue
    _assert_finished_last(stubs, ref, Status.ERROR)


async def test_a_cancelled_deployment_cancels_the_import_cleans_up_and_ends_canceled(
        temporal: WorkflowEnvironment) -> None:
    upload = Blocking()
    stubs = Stubs(behaviours={names.UPLOAD_DISK: upload})
    async with workers(temporal.client, stubs, WORKFLOWS) as queue:
        handle, ref = await _start_deployment(temporal.client, queue)
        cause, status = await cancel_during(handle, upload)

    assert isinstance(cause, CancelledError), cause
    assert status == WorkflowExecutionStatus.CANCELED
    assert upload.cancelled.is_set(), "the running import never saw the cancel"
    assert _updates(stubs, names.RECORD_TASK) == [TaskUpdate(task=_at(ref, DeployTask.DEPLOY),
                                                             status=Status.CANCELED,
                                                             message="Canceled by user request")]
    assert stubs.events.index("cancelled " + names.UPLOAD_DISK) < stubs.events.index(names.CLEANUP_INSTANCE)
    assert CleanupInput.model_validate(stubs.args(names.CLEANUP_INSTANCE)[0]).succeeded is False
    _assert_finished_last(stubs, ref, Status.CANCELED)


@pytest.mark.parametrize("outcome", ["completed", "failed"])
async def test_a_failed_deployment_cleanup_is_recorded_and_leaves_the_outcome_as_it_was(
        temporal: WorkflowEnvironment, outcome: str) -> None:
    behaviours = {names.CLEANUP_INSTANCE: fails(InvalidInput("/etc is not under an allowed root"))}
    if outcome == "failed":
        behaviours[names.DEPLOY_INSTANCE] = fails(InvalidInput("flavor m1.tiny is too small"))
    stubs = Stubs(behaviours=behaviours)
    async with workers(temporal.client, stubs, WORKFLOWS) as queue:
        handle, ref = await _start_deployment(temporal.client, queue)
        if outcome == "completed":
            assert await handle.result() == Status.COMPLETED.value
        else:
            with pytest.raises(WorkflowFailureError):
                await handle.result()
            # the deploy's error, not the cleanup's
            cause = await _instance_failure(temporal.client, ref)
            assert isinstance(cause, ApplicationError) and cause.message == "flavor m1.tiny is too small", cause

    cleanup_error = TaskUpdate(task=_at(ref, DeployTask.CLEANUP), status=Status.ERROR,
                               message="/etc is not under an allowed root")
    deploy_error = TaskUpdate(task=_at(ref, DeployTask.FINALIZE), status=Status.ERROR,
                              message="flavor m1.tiny is too small")
    assert _updates(stubs, names.RECORD_TASK) == ([cleanup_error] if outcome == "completed"
                                                  else [deploy_error, cleanup_error])
    assert len(stubs.of(names.CLEANUP_INSTANCE)) == 1
    finished = FinishExecution.model_validate(stubs.args(names.FINISH_TRANSFER_EXECUTION)[0])
    assert finished.status == (Status.COMPLETED if outcome == "completed" else Status.ERROR)


async def test_a_cancel_during_a_deployed_instances_cleanup_removes_it_and_ends_canceled(
        temporal: WorkflowEnvironment) -> None:
    cleanup = Blocking()
    stubs = Stubs(behaviours={names.CLEANUP_INSTANCE: cleanup})
    async with workers(temporal.client, stubs, WORKFLOWS) as queue:
        handle, ref = await _start_deployment(temporal.client, queue)
        await asyncio.wait_for(cleanup.started.wait(), 30)
        await handle.cancel()
        assert ref.execution_id is not None
        child = temporal.client.get_workflow_handle(ids.execution_instance(ref.execution_id, ref.instance))
        await cancel_processed(child)
        # The shielded cleanup was not asked to stop; it ends, and the cancel is honoured after it.
        cleanup.release.set()
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()

    assert isinstance(failed.value.cause, CancelledError), failed.value
    assert not cleanup.cancelled.is_set()
    first, second = (CleanupInput.model_validate(a) for a in stubs.args(names.CLEANUP_INSTANCE))
    assert first.succeeded and first.deployed is not None
    # the second cleanup removes the deployed instance, as after a cancel in any earlier step
    assert not second.succeeded and second.deployed == first.deployed
    assert TaskUpdate(task=_at(ref, DeployTask.FINALIZE), status=Status.CANCELED,
                      message="Canceled by user request during the cleanup: the deployed instance was removed") \
        in _updates(stubs, names.RECORD_TASK)
    finished = FinishExecution.model_validate(stubs.args(names.FINISH_TRANSFER_EXECUTION)[0])
    assert finished.status == Status.CANCELED



async def test_a_cancel_as_an_execution_ends_goes_to_its_auto_deployment_which_records_it(
        temporal: WorkflowEnvironment) -> None:
    """The replication has completed and the execution records its end when the cancel comes (a migration
    cancelled at that moment): the deployment still starts, gets the cancel while it reads its plan,
    makes nothing and records every task and itself CANCELED. Before, no deployment started and the
    migration stayed RUNNING for good."""
    recording, reading = Blocking(), Blocking()

    async def finish(arg: dict[str, Any]) -> None:
        if len(stubs.of(names.FINISH_TRANSFER_EXECUTION)) == 1:  # the execution's: the deployment's is not held
            await recording(arg)

    async def begin(arg: dict[str, Any]) -> Any:
        await reading(arg)
        return await stubs.answer(names.BEGIN_DEPLOYMENT)(arg)

    stubs = Stubs(behaviours={names.FINISH_TRANSFER_EXECUTION: finish, names.BEGIN_DEPLOYMENT: begin})
    client, transfer, execution = temporal.client, f"t-{uuid.uuid4()}", f"x-{uuid.uuid4()}"
    async with workers(client, stubs, WORKFLOWS) as queue:
        handle = await client.start_workflow(
            TransferExecutionWorkflow.run,
            TransferExecutionInput(transfer_id=transfer, execution_id=execution, auto_deploy=True, timeouts=FAST),
            id=ids.execution(transfer, execution), task_queue=queue, execution_timeout=RUN_TIMEOUT)
        await asyncio.wait_for(recording.started.wait(), 30)
        await handle.cancel()
        await cancel_processed(handle)
        recording.release.set()
        assert await handle.result() == Status.COMPLETED.value  # its replication did complete
        await asyncio.wait_for(reading.started.wait(), 30)
        [auto] = stubs.args(names.CREATE_AUTO_DEPLOYMENT)
        deployment = client.get_workflow_handle(ids.deployment(auto["deployment_id"]))
        await cancel_processed(deployment)
        reading.release.set()
        with pytest.raises(WorkflowFailureError) as failed:
            await deployment.result()

    assert isinstance(failed.value.cause, CancelledError), failed.value
    assert not reading.cancelled.is_set(), "the plan's read was waited for, not abandoned"
    assert names.CREATE_REPLICA_OVERLAY not in stubs.names(), "a cancelled deployment made something"
    ref = TaskRef(migration_id=auto["deployment_id"], instance="vm-a", task_type="",
                  execution_id=auto["deployment_id"] + "-execution")
    assert _updates(stubs, names.RECORD_TASK) == [
        TaskUpdate(task=_at(ref, DeployTask.OVERLAY), status=Status.CANCELED, message="Canceled by user request"),
        TaskUpdate(task=_at(ref, DeployTask.CLEANUP), status=Status.UNSCHEDULED,
                   message="Canceled before it started: there is nothing to clean up")]
    assert _updates(stubs, names.RECORD_UNFINISHED_TASKS) == [
        TaskUpdate(task=_at(ref, DeployTask.OVERLAY), status=Status.CANCELED)]
    finished = [FinishExecution.model_validate(a) for a in stubs.args(names.FINISH_TRANSFER_EXECUTION)]
    assert [(f.execution_id, f.status) for f in finished] == [(execution, Status.COMPLETED),
                                                              (ref.execution_id, Status.CANCELED)]


@pytest.mark.parametrize(("parent", "ends"), [(Deciding, WorkflowExecutionStatus.COMPLETED),
                                              (Gathering, WorkflowExecutionStatus.CANCELED)])
async def test_a_cancel_that_comes_as_the_instances_end_leaves_their_outcome(
        temporal: WorkflowEnvironment, parent: Any, ends: WorkflowExecutionStatus) -> None:
    """The race of a deployment cancelled as its last instance completes: the child's completion and the
    cancel reach the parent in one activation. ``gather_deciding`` ends as the instance did; ``Gathering``
    (deployments before ``INSTANCES_DECIDE_CANCEL``) ends CANCELED with the instance's work done and kept."""
    client, parents, children = temporal.client, f"parents-{uuid.uuid4()}", f"children-{uuid.uuid4()}"
    async with Worker(client, task_queue=children, workflows=[Instance]):
        async with Worker(client, task_queue=parents, workflows=[parent]):
            handle = await client.start_workflow(parent.run, children, id=f"p-{uuid.uuid4()}", task_queue=parents,
                                                 execution_timeout=RUN_TIMEOUT)
            await stepped_past(handle, EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED)
        # The parents' worker is gone: the instance ends, then the parent is cancelled, and it sees both at once.
        child = client.get_workflow_handle(handle.id + "-instance")
        await child.signal(Instance.finish)
        assert await child.result() == "done"
        await handle.cancel()
        async with Worker(client, task_queue=parents, workflows=[parent]):
            with contextlib.suppress(WorkflowFailureError):
                await asyncio.wait_for(handle.result(), 30)
        assert (await handle.describe()).status == ends
        assert (await child.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_a_cancel_is_forwarded_to_the_running_instances_and_ends_as_they_do(
        temporal: WorkflowEnvironment) -> None:
    client, parents, children = temporal.client, f"parents-{uuid.uuid4()}", f"children-{uuid.uuid4()}"
    async with Worker(client, task_queue=children, workflows=[Instance]), \
            Worker(client, task_queue=parents, workflows=[Deciding]):
        handle = await client.start_workflow(Deciding.run, children, id=f"p-{uuid.uuid4()}", task_queue=parents,
                                             execution_timeout=RUN_TIMEOUT)
        await stepped_past(handle, EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), 30)
        assert isinstance(failed.value.cause, CancelledError), failed.value
        child = client.get_workflow_handle(handle.id + "-instance")
        assert (await child.describe()).status == WorkflowExecutionStatus.CANCELED


async def test_a_lost_host_replicates_again_from_a_new_snapshot_elsewhere(temporal: WorkflowEnvironment) -> None:
    stubs = Stubs()
    hosts_lost(stubs, 1)
    async with workers(temporal.client, stubs, WORKFLOWS) as queue:
        handle, ref = await _start_transfer(temporal.client, queue, LOSES_HOSTS)
        assert await handle.result() == Status.COMPLETED.value

    assert [c.queue for c in stubs.of(names.SNAPSHOT_INSTANCE)] == [queue + "-data"] * 2
    # the lost host's snapshot is released, from the shared queue; the replication ran on the second host
    [released] = stubs.of(names.RELEASE_SNAPSHOT)
    arg = StepInput.model_validate(released.arg)
    assert arg.snapshot is not None and (arg.snapshot.snapshot_id, arg.task) == (
        "snap-1", _at(ref, TransferTask.SNAPSHOT)), released
    assert released.queue == queue + "-data"
    [replicated] = stubs.of(names.REPLICATE_DISK)
    sync = DiskStepInput.model_validate(replicated.arg)
    assert replicated.queue == queue + "-host"
    # the replica is re-synced from the second snapshot, told that the first may have written into it
    assert sync.step.snapshot is not None and (sync.step.snapshot.snapshot_id, sync.failovers) == ("snap-2", 1)
    [moved] = _updates(stubs, names.RECORD_TASK)
    assert (moved.task, moved.status) == (_at(ref, TransferTask.REPLICATE), Status.RUNNING)
    assert f"No worker of {queue}-host-lost took the step" in (moved.message or ""), moved
    assert f"on another host (1 of {HOST_FAILOVERS})" in (moved.message or ""), moved
    [release] = stubs.of(names.CLEANUP_INSTANCE)
    step = CleanupInput.model_validate(release.arg).step
    assert release.queue == queue + "-host" and step.snapshot is not None and step.snapshot.snapshot_id == "snap-2"
    _assert_finished_last(stubs, ref, Status.COMPLETED)


async def test_an_execution_whose_hosts_keep_getting_lost_ends_error_and_releases_from_the_shared_queue(
        temporal: WorkflowEnvironment) -> None:
    stubs = Stubs()
    hosts_lost(stubs, HOST_FAILOVERS + 1)
    async with workers(temporal.client, stubs, WORKFLOWS) as queue:
        handle, ref = await _start_transfer(temporal.client, queue, LOSES_HOSTS)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        assert ref.execution_id is not None
        with pytest.raises(WorkflowFailureError) as failed:
            await temporal.client.get_workflow_handle(ids.execution_instance(ref.execution_id, "vm-a")).result()

    assert isinstance(failed.value.cause, ActivityError), failed.value
    cause = failed.value.cause.cause
    assert isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START, failed.value.cause
    assert len(stubs.of(names.SNAPSHOT_INSTANCE)) == HOST_FAILOVERS + 1
    assert len(stubs.of(names.RELEASE_SNAPSHOT)) == HOST_FAILOVERS
    assert not stubs.of(names.REPLICATE_DISK), "a replication ran on no host"
    updates = _updates(stubs, names.RECORD_TASK)
    assert [(u.task, u.status) for u in updates[:HOST_FAILOVERS]] == [
        (_at(ref, TransferTask.REPLICATE), Status.RUNNING)] * HOST_FAILOVERS
    assert updates[HOST_FAILOVERS] == TaskUpdate(task=_at(ref, TransferTask.REPLICATE), status=Status.ERROR,
                                                 message=str(cause))
    # No worker polls the lost host's queue: the release (of the last snapshot) runs from the shared one.
    [release] = stubs.of(names.CLEANUP_INSTANCE)
    arg = CleanupInput.model_validate(release.arg)
    assert release.queue == queue + "-data", release.queue
    assert arg.succeeded and arg.step.snapshot is not None and arg.step.snapshot.snapshot_id == (
        f"snap-{HOST_FAILOVERS + 1}")
    _assert_finished_last(stubs, ref, Status.ERROR)


async def test_a_lost_host_deploys_again_from_a_new_overlay_elsewhere(temporal: WorkflowEnvironment) -> None:
    stubs = Stubs()
    hosts_lost(stubs, 1, names.CREATE_REPLICA_OVERLAY)
    async with workers(temporal.client, stubs, WORKFLOWS) as queue:
        handle, ref = await _start_deployment(temporal.client, queue, LOSES_HOSTS)
        assert await handle.result() == Status.COMPLETED.value

    assert [c.queue for c in stubs.of(names.CREATE_REPLICA_OVERLAY)] == [queue + "-data"] * 2
    # every pinned step ran once, on the second overlay's host: the lost one took none
    assert [(c.name, c.queue) for c in stubs.calls if c.name in DEPLOY_STEPS] == [
        (name, queue + "-host") for name in DEPLOY_STEPS]
    [moved] = _updates(stubs, names.RECORD_TASK)
    # OS morphing is the first step on the overlay's host
    assert (moved.task, moved.status) == (_at(ref, DeployTask.OS_MORPHING), Status.RUNNING)
    assert f"No worker of {queue}-host-lost took the step" in (moved.message or ""), moved
    [cleanup] = stubs.of(names.CLEANUP_INSTANCE)
    assert cleanup.queue == queue + "-host" and CleanupInput.model_validate(cleanup.arg).succeeded
    _assert_finished_last(stubs, ref, Status.COMPLETED)


async def test_a_deployment_whose_hosts_keep_getting_lost_ends_error_and_cleans_up_from_the_shared_queue(
        temporal: WorkflowEnvironment) -> None:
    stubs = Stubs()
    hosts_lost(stubs, HOST_FAILOVERS + 1, names.CREATE_REPLICA_OVERLAY)
    async with workers(temporal.client, stubs, WORKFLOWS) as queue:
        handle, ref = await _start_deployment(temporal.client, queue, LOSES_HOSTS)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        cause = await _instance_failure(temporal.client, ref)

    assert isinstance(cause, TimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START, cause
    assert len(stubs.of(names.CREATE_REPLICA_OVERLAY)) == HOST_FAILOVERS + 1
    assert not any(c.name in DEPLOY_STEPS for c in stubs.calls), "a pinned step ran on no host"
    updates = _updates(stubs, names.RECORD_TASK)
    assert [(u.task, u.status) for u in updates[:HOST_FAILOVERS]] == [
        (_at(ref, DeployTask.OS_MORPHING), Status.RUNNING)] * HOST_FAILOVERS
    assert updates[HOST_FAILOVERS] == TaskUpdate(task=_at(ref, DeployTask.OS_MORPHING), status=Status.ERROR,
                                                 message=str(cause))
    [cleanup] = stubs.of(names.CLEANUP_INSTANCE)
    arg = CleanupInput.model_validate(cleanup.arg)
    assert cleanup.queue == queue + "-data", cleanup.queue
    assert (arg.succeeded, arg.deployed, arg.disks) == (False, None, [])
    _assert_finished_last(stubs, ref, Status.ERROR)
