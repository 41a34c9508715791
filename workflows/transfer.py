"""``TransferExecutionWorkflow``: bring a transfer's replica disks up to date, one child per instance.

Per instance: validate -> snapshot -> replicate each disk into its replica -> release the snapshot.
API-started runs get their execution row from the API; scheduled runs create it in their first
activity (and end quietly when the transfer is busy, like an overlap SKIP).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities import names
    from core.summary import CHILD_SUMMARIES
    from workflows import ids
    from workflows.deployment import DeploymentWorkflow
    from workflows.shared import (
        _retry,
        at,
        finish,
        first_step,
        gather_instances,
        record_failure,
        shielded,
    )
    from workflows.steps import SNAPSHOT_CANCEL_WAITS, short_step_heartbeat, snapshot_cancellation
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
    from workflows.types import CleanupInput, DiskStepInput, SnapshotResult, Status, Timeouts, ValidateResult

#: The release step heartbeats, so a worker killed during it is retried within a heartbeat timeout.
CLEANUP_HEARTBEAT = "transfer-cleanup-heartbeat"


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
            await finish(plan.action_id, execution_id, self._status, t)
        if plan.auto_deploy:
            await self._deploy(plan, t)
        return self._status.value

    async def _deploy(self, plan: ActionPlan, t: Timeouts) -> None:
        deployment_id = await workflow.execute_activity(
            names.CREATE_AUTO_DEPLOYMENT,
            AutoDeployment(transfer_id=plan.transfer_id, execution_id=plan.execution_id,
                           deployment_id=str(workflow.uuid4()), deployment_execution_id=str(workflow.uuid4())),
            result_type=str, start_to_close_timeout=timedelta(seconds=60), retry_policy=_retry(t, 5),
        )
        # The deployment outlives this execution: it is its own workflow, started and left running.
        await workflow.start_child_workflow(
            DeploymentWorkflow.run, DeploymentInput(deployment_id=deployment_id),
            id=ids.deployment(deployment_id), task_queue=workflow.info().task_queue,
            parent_close_policy=ParentClosePolicy.ABANDON,
        )


@workflow.defn
class TransferInstanceWorkflow:
    def __init__(self) -> None:
        self._current: str | None = None

    @workflow.query
    def current_task(self) -> str | None:
        return self._current

    @workflow.run
    async def run(self, p: InstancePlan) -> list[ReplicaResult]:
        t = p.timeouts
        step = first_step(p, TransferTask.VALIDATE)
        # Replication deploys nothing: an instance of the same name at the destination (an
        # earlier deployment, a test failover) is a deployment's concern, not this execution's.
        step.replica_only = True
        # The snapshot also starts tracking changes for the next execution (where the source can).
        step.change_tracking = p.plan.transfer_id
        host_queue: str | None = None
        try:
            self._current = TransferTask.VALIDATE
            v: ValidateResult = await workflow.execute_activity(
                names.VALIDATE_INSTANCE, step, result_type=ValidateResult,
                start_to_close_timeout=timedelta(seconds=t.short), retry_policy=_retry(t, 5),
                heartbeat_timeout=short_step_heartbeat(t),
            )
            step.export_info = v.export_info

            self._current = TransferTask.SNAPSHOT
            s: SnapshotResult = await workflow.execute_activity(
                names.SNAPSHOT_INSTANCE, at(step, p, TransferTask.SNAPSHOT), result_type=SnapshotResult,
                task_queue=workflow.info().task_queue + "-data",
                start_to_close_timeout=timedelta(seconds=t.transfer), retry_policy=_retry(t, 5),
                # A snapshot copy can take long: a dead worker's attempt is retried after this, not hours.
                heartbeat_timeout=timedelta(seconds=max(t.heartbeat, 30)),
                cancellation_type=snapshot_cancellation(workflow.patched(SNAPSHOT_CANCEL_WAITS)),
            )
            host_queue, step.snapshot, step.workdir = s.host_queue, s.snapshot, s.workdir

            self._current = TransferTask.REPLICATE
            here = at(step, p, TransferTask.REPLICATE)
            # Disks of one VM sync in parallel; a retried attempt re-syncs its disk in full.
            return list(await asyncio.gather(*(
                workflow.execute_activity(
                    names.REPLICATE_DISK, DiskStepInput(step=here, disk=disk), result_type=ReplicaResult,
                    task_queue=host_queue, start_to_close_timeout=timedelta(seconds=t.transfer),
                    heartbeat_timeout=timedelta(seconds=t.heartbeat),
                    schedule_to_start_timeout=timedelta(seconds=t.host_schedule_to_start),
                    retry_policy=_retry(t, 5),
                    cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                )
                for disk in s.snapshot.disks
            )))
        except BaseException as err:
            await record_failure(p, self._current, err)
            raise
        finally:
            self._current = TransferTask.RELEASE
            # The transfer creates no destination instance: cleanup only releases the snapshot
            # and the scratch space (succeeded=True keeps the provider from deleting anything else).
            await shielded(names.CLEANUP_INSTANCE,
                           CleanupInput(step=at(step, p, TransferTask.RELEASE), succeeded=True),
                           t, task_queue=host_queue or workflow.info().task_queue + "-data",
                           start_to_close=timedelta(seconds=t.short),
                           schedule_to_start_timeout=timedelta(seconds=t.host_schedule_to_start),
                           # A worker killed mid-cleanup is noticed within a heartbeat, not t.short.
                           heartbeat_timeout=timedelta(seconds=t.heartbeat)
                           if workflow.patched(CLEANUP_HEARTBEAT) else None)
