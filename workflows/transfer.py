"""``TransferExecutionWorkflow``: bring a transfer's replica disks up to date, one child per instance.

Per instance: validate -> snapshot -> replicate each disk into its replica -> release the snapshot.
API-started runs get their execution row from the API; scheduled runs create it in their first
activity (and end quietly when the transfer is busy, like an overlap SKIP).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial

from temporalio import workflow
from temporalio.common import SearchAttributePair
from temporalio.exceptions import ActivityError, FailureError, is_cancelled_exception
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities import names
    from core import summary
    from core.models import DiskLocator
    from core.summary import CHILD_SUMMARIES, TRANSFER_SUMMARIES
    from workflows import ids, search
    from workflows.deployment import DeploymentWorkflow
    from workflows.failover import failing_over, gather_or_cancel, moved, release_lost_snapshot
    from workflows.hosts import host_lost, on_host
    from workflows.shared import (
        _retry,
        at,
        failure_message,
        finish,
        first_step,
        gather_instances,
        of_migration,
        record_failure,
        record_task,
        ref,
        set_migration_state,
        shielded,
        summaries,
    )
    from workflows.shield import settled
    from workflows.steps import SNAPSHOT_CANCEL_WAITS, Steps, short_step_heartbeat, snapshot_cancellation
    from workflows.transfer_types import (
        ActionPlan,
        AutoDeployment,
        BeginExecution,
        DeploymentInput,
        InstancePlan,
        ReplicaResult,
        TransferExecutionInput,
        TransferTask,
    )
    from workflows.types import (
        CleanupInput,
        DiskStepInput,
        SnapshotResult,
        Status,
        StepInput,
        TaskUpdate,
        Timeouts,
        ValidateResult,
    )

#: The release step heartbeats, so a worker killed during it is retried within a heartbeat timeout.
CLEANUP_HEARTBEAT = "transfer-cleanup-heartbeat"
#: A replication whose host never takes it starts again from a new snapshot on another host, and the
#: release of a lost host runs from the shared data queue (``workflows.failover``). Before, the
#: execution ended ERROR after ``host_schedule_to_start``, and its release waited as long again on the
#: lost host's queue, then failed.
TRANSFER_HOST_FAILOVER = "transfer-host-failover"
#: An auto deployment runs with its execution's timeouts (the operator's settings, as a deployment
#: started through the API does); before, it ran with the defaults, so a lost host there was waited
#: for an hour whatever ``STERNA_HOST_SCHEDULE_TO_START_TIMEOUT`` said. Part of the child's start command.
AUTO_DEPLOYMENT_TIMEOUTS = "auto-deployment-timeouts"
#: A failed release (the final cleanup) is recorded on its task (ERROR, with its cause) and leaves the
#: execution's outcome as it was, as a migration's cleanup does (``workflows.instance``). Before, its task
#: stayed RUNNING and its failure became the execution's.
RELEASE_AS_MIGRATIONS = "transfer-release-failure-recorded"
#: A cancel that comes after every instance has completed (while the execution records its end, or starts
#: its auto deployment) still starts the deployment, and is sent on to it. Before, the deployment never
#: started and a migration stayed RUNNING for good: its execution COMPLETED, and no deployment to follow.
LATE_CANCEL_TO_DEPLOYMENT = "transfer-late-cancel-to-deployment"


@workflow.defn
class TransferExecutionWorkflow:
    def __init__(self) -> None:
        self._status = Status.RUNNING

    @workflow.query
    def status(self) -> str:
        return self._status.value

    @workflow.run
    async def run(self, inp: TransferExecutionInput) -> str:
        t = inp.timeouts
        execution_id = inp.execution_id or str(workflow.uuid4())
        plan: ActionPlan = await workflow.execute_activity(
            names.BEGIN_TRANSFER_EXECUTION,
            BeginExecution(transfer_id=inp.transfer_id, execution_id=execution_id, create=inp.execution_id is None,
                           shutdown_instances=inp.shutdown_instances, auto_deploy=inp.auto_deploy,
                           workflow_id=workflow.info().workflow_id),
            result_type=ActionPlan, start_to_close_timeout=timedelta(seconds=60), retry_policy=_retry(t, 10),
        )
        if plan.refused:
            workflow.logger.info("scheduled execution skipped: %s", plan.refused)
            return "SKIPPED"
        # A summary is part of the child's start command: runs begun before it replay without one.
        summaries = workflow.patched(CHILD_SUMMARIES)
        migration = of_migration()
        #: a cancel that came once every instance had completed: it goes to the deployment they make
        late_cancel = False
        try:
            self._status = await gather_instances([
                workflow.execute_child_workflow(
                    TransferInstanceWorkflow.run, InstancePlan(plan=plan, instance=instance, timeouts=t),
                    id=ids.execution_instance(execution_id, instance), task_queue=workflow.info().task_queue,
                    static_summary=f"{instance}: transfer execution" if summaries else None,
                )
                for instance in plan.instances
            ])
        except asyncio.CancelledError:
            self._status = Status.CANCELED
            raise
        except BaseException:
            self._status = Status.ERROR
            raise
        finally:
            if migration and not (self._status == Status.COMPLETED and plan.auto_deploy):
                set_migration_state(self._status)  # no deployment follows: the migration ends here
            try:
                await finish(plan.action_id, execution_id, self._status, t)
            except asyncio.CancelledError:
                if not (self._status == Status.COMPLETED and plan.auto_deploy
                        and workflow.patched(LATE_CANCEL_TO_DEPLOYMENT)):
                    raise
                late_cancel = True
        if plan.auto_deploy:
            try:
                if late_cancel or workflow.patched(LATE_CANCEL_TO_DEPLOYMENT):
                    await self._deploy_then_cancel(plan, t, migration, late_cancel)
                else:
                    await self._deploy(plan, t, migration)
            except BaseException as err:
                if migration:  # its deployment never started
                    set_migration_state(Status.CANCELED if is_cancelled_exception(err) else Status.ERROR)
                raise
        return self._status.value

    async def _deploy_then_cancel(self, plan: ActionPlan, t: Timeouts, migration: bool, cancel: bool) -> None:
        """``_deploy``, which a cancel does not interrupt: one that came after the instances completed
        (``cancel``) or during the start is the deployment's to honour, so it is sent on to it."""
        deployment_id, cancelled = await settled(self._deploy(plan, t, migration))
        if cancel or cancelled:
            workflow.logger.info("cancel came after the replication: deployment %s is cancelled", deployment_id)
            with contextlib.suppress(FailureError):  # it has ended already: nothing left to cancel
                await workflow.get_external_workflow_handle(ids.deployment(deployment_id)).cancel()

    async def _deploy(self, plan: ActionPlan, t: Timeouts, migration: bool = False) -> str:
        deployment_id: str = await workflow.execute_activity(
            names.CREATE_AUTO_DEPLOYMENT,
            AutoDeployment(transfer_id=plan.transfer_id, execution_id=plan.execution_id,
                           deployment_id=str(workflow.uuid4()), deployment_execution_id=str(workflow.uuid4())),
            result_type=str, start_to_close_timeout=timedelta(seconds=60), retry_policy=_retry(t, 5),
        )
        # The deployment outlives this execution: it is its own workflow, started and left running.
        await workflow.start_child_workflow(
            DeploymentWorkflow.run,
            DeploymentInput(deployment_id=deployment_id, timeouts=t) if workflow.patched(AUTO_DEPLOYMENT_TIMEOUTS)
            else DeploymentInput(deployment_id=deployment_id),
            id=ids.deployment(deployment_id), task_queue=workflow.info().task_queue,
            # Part of the start command: runs begun before it start their deployment without one.
            static_summary=summary.workflow("deployment", plan.instances)
            if workflow.patched(TRANSFER_SUMMARIES) else None,
            parent_close_policy=ParentClosePolicy.ABANDON,
            # A migration's deployment is found by its MigrationId too, and says the migration's state.
            search_attributes=workflow.info().typed_search_attributes.updated(
                SearchAttributePair(search.MIGRATION_STATE, Status.RUNNING.value)) if migration else None,
        )
        if migration:
            set_migration_state(None)
        return deployment_id


@workflow.defn
class TransferInstanceWorkflow:
    def __init__(self) -> None:
        self._current: str | None = None
        #: the queue of the host holding the snapshot's scratch files, once the snapshot step has chosen it
        self._host_queue: str | None = None

    @workflow.query
    def current_task(self) -> str | None:
        return self._current

    @workflow.run
    async def run(self, p: InstancePlan) -> list[ReplicaResult]:
        t = p.timeouts
        failover = workflow.patched(TRANSFER_HOST_FAILOVER)
        say = summaries(p)
        step = first_step(p, TransferTask.VALIDATE)
        # Replication deploys nothing: an instance of the same name at the destination (an
        # earlier deployment, a test failover) is a deployment's concern, not this execution's.
        step.replica_only = True
        # The snapshot also starts tracking changes for the next execution (where the source can).
        step.change_tracking = p.plan.transfer_id
        lost = False
        try:
            self._current = TransferTask.VALIDATE
            v: ValidateResult = await workflow.execute_activity(
                names.VALIDATE_INSTANCE, step, result_type=ValidateResult,
                start_to_close_timeout=timedelta(seconds=t.short), retry_policy=_retry(t, 5),
                heartbeat_timeout=short_step_heartbeat(t), summary=say(TransferTask.VALIDATE),
            )
            step.export_info = v.export_info
            steps = Steps(t, heartbeat=timedelta(seconds=t.heartbeat), disk_attempts=5)

            async def on_lost(failovers: int) -> None:
                # The host holding the snapshot never took the replication: replicate again from a new
                # snapshot, on whichever host takes it from the shared data queue.
                await record_task(TaskUpdate(task=ref(p, TransferTask.REPLICATE), status=Status.RUNNING,
                                             message=moved(self._host_queue, t, failovers)), t)
                await release_lost_snapshot(steps, at(step, p, TransferTask.SNAPSHOT),
                                            lambda update: record_task(update, t), say(TransferTask.SNAPSHOT))
                self._host_queue = None  # until the next snapshot: nothing more is scheduled there

            return await failing_over(lambda n: self._replicate(step, p, n, failover, say), on_lost, enabled=failover)
        except BaseException as err:
            lost = failover and host_lost(err)
            await record_failure(p, self._current, err)
            raise
        finally:
            self._current = TransferTask.RELEASE
            # A lost host's queue has no worker: its release (the source snapshot) runs from any host.
            queue = None if lost else self._host_queue
            recorded = workflow.patched(RELEASE_AS_MIGRATIONS)
            try:
                try:
                    await self._release(step, p, queue, say(TransferTask.RELEASE))
                except ActivityError as err:
                    if not (failover and queue is not None and host_lost(err)):
                        raise
                    # The host was lost after the replication, before its release: release from any host.
                    await self._release(step, p, None, say(TransferTask.RELEASE))
            except ActivityError as err:
                if not recorded:
                    raise
                # Leftover scratch or a kept snapshot is a leak to report, not the execution's outcome.
                await record_task(TaskUpdate(task=ref(p, TransferTask.RELEASE), status=Status.ERROR,
                                             message=failure_message(err)), t)

    async def _replicate(self, step: StepInput, p: InstancePlan, failovers: int, failover: bool,
                         say: Callable[[str], str | None]) -> list[ReplicaResult]:
        """Snapshot on whichever host takes it, then each disk into its replica on that host.

        ``failover``: ``TRANSFER_HOST_FAILOVER`` is on, and a failed disk's siblings are cancelled."""
        t = p.timeouts
        self._current = TransferTask.SNAPSHOT
        s: SnapshotResult = await workflow.execute_activity(
            names.SNAPSHOT_INSTANCE, at(step, p, TransferTask.SNAPSHOT), result_type=SnapshotResult,
            task_queue=workflow.info().task_queue + "-data",
            start_to_close_timeout=timedelta(seconds=t.transfer), retry_policy=_retry(t, 5),
            # A snapshot copy can take long: a dead worker's attempt is retried after this, not hours.
            heartbeat_timeout=timedelta(seconds=max(t.heartbeat, 30)),
            cancellation_type=snapshot_cancellation(workflow.patched(SNAPSHOT_CANCEL_WAITS)),
            summary=say(TransferTask.SNAPSHOT),
        )
        self._host_queue, step.snapshot, step.workdir = s.host_queue, s.snapshot, s.workdir

        self._current = TransferTask.REPLICATE
        here = at(step, p, TransferTask.REPLICATE)
        said = say(TransferTask.REPLICATE)
        # Disks of one VM sync in parallel; a retried attempt re-syncs its disk in full.
        def replicate(disk: DiskLocator) -> Awaitable[ReplicaResult]:
            return workflow.execute_activity(
                names.REPLICATE_DISK, DiskStepInput(step=here, disk=disk, failovers=failovers),
                result_type=ReplicaResult,
                task_queue=s.host_queue, start_to_close_timeout=timedelta(seconds=t.transfer),
                heartbeat_timeout=timedelta(seconds=t.heartbeat),
                schedule_to_start_timeout=timedelta(seconds=t.host_schedule_to_start),
                retry_policy=_retry(t, 5),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                summary=summary.of_disk(said, disk.disk_id),
            )

        async def note(message: str) -> None:
            await record_task(TaskUpdate(task=here.task, status=Status.RUNNING, message=message), t)

        replications = [on_host(partial(replicate, disk), s.host_queue, t, note) for disk in s.snapshot.disks]
        if failover:
            return await gather_or_cancel(replications)
        return list(await asyncio.gather(*replications))

    async def _release(self, step: StepInput, p: InstancePlan, queue: str | None, said: str | None) -> None:
        """The transfer creates no destination instance: cleanup only releases the snapshot and the
        scratch space (succeeded=True keeps the provider from deleting anything else)."""
        t = p.timeouts
        await shielded(names.CLEANUP_INSTANCE,
                       CleanupInput(step=at(step, p, TransferTask.RELEASE), succeeded=True),
                       t, task_queue=queue or workflow.info().task_queue + "-data", host=queue,
                       start_to_close=timedelta(seconds=t.short),
                       schedule_to_start_timeout=timedelta(seconds=t.host_schedule_to_start),
                       # A worker killed mid-cleanup is noticed within a heartbeat, not t.short.
                       heartbeat_timeout=timedelta(seconds=t.heartbeat)
                       if workflow.patched(CLEANUP_HEARTBEAT) else None, summary=said)
