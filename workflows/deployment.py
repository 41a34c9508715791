"""``DeploymentWorkflow``: turn a transfer's replica disks into an instance, one child per instance.

Per instance: qcow2 overlay on each replica -> OS morphing on the overlay -> flatten and import
-> deploy (and boot check) -> cleanup. The replica's bytes never change, unless the deployment
was asked not to clone (``clone_disks: false``): then it works on the replica itself and the
replica is marked consumed (the next execution re-syncs it in full). A replica kept as a snapshot
chain (EBS) is read down under the overlay, and "flatten and import" writes only the overlay's
changes, as a child of the replica snapshot (``activities.replica_deploy``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from activities import names
    from core.models import DeployedInstance, DiskLocator, ImportedDisk
    from core.summary import CHILD_SUMMARIES
    from workflows import ids
    from workflows.failover import failing_over, moved
    from workflows.hosts import host_lost
    from workflows.shared import (
        _retry,
        at,
        failure_message,
        finish,
        first_step,
        gather_deciding,
        gather_instances,
        of_migration,
        record_failure,
        record_task,
        ref,
        set_migration_state,
        summaries,
    )
    from workflows.shield import settled
    from workflows.steps import Steps, short_step_heartbeat
    from workflows.transfer_types import (
        SNAPSHOT_FORMATS,
        ActionPlan,
        DeploymentInput,
        DeployTask,
        InstancePlan,
        OverlayInput,
        OverlayResult,
    )
    from workflows.types import (
        CleanupInput,
        DeployInput,
        MorphInput,
        Status,
        StepInput,
        TaskUpdate,
        Timeouts,
        UploadResult,
    )

#: A failed cleanup is recorded on its task and leaves the deployment's outcome as it was; a cancel during
#: the cleanup of a deployed instance removes it. Both as migrations do (``workflows.instance``).
CLEANUP_AS_MIGRATIONS = "deployment-cleanup-as-migrations"
#: An instance whose overlay's host never takes its next step starts again from a new overlay on another
#: host, and one that ends on a lost host is cleaned up from the shared data queue (``workflows.failover``).
#: Before, the deployment ended ERROR after ``host_schedule_to_start``, and its cleanup waited as long
#: again on the lost host's queue.
DEPLOYMENT_HOST_FAILOVER = "deployment-host-failover"
#: A cancel is forwarded to each instance's workflow, and the deployment ends as its instances did
#: (``workflows.shared.gather_deciding``). Before, a cancel that came as the last instance completed ended the
#: deployment CANCELED with that instance deployed and kept: its cleanup had already run as for a success.
INSTANCES_DECIDE_CANCEL = "deployment-instances-decide-cancel"
#: A cancel while the deployment reads its plan (``BEGIN_DEPLOYMENT``) waits for it, then records every task
#: and the execution CANCELED. Before, the run ended there and the deployment stayed as the API had left
#: it (SCHEDULED, or CANCELLING) for good.
CANCEL_AT_BEGIN_RECORDED = "deployment-cancel-at-begin-recorded"


@workflow.defn
class DeploymentWorkflow:
    def __init__(self) -> None:
        self._status = Status.RUNNING

    @workflow.query
    def status(self) -> str:
        return self._status.value

    @workflow.run
    async def run(self, inp: DeploymentInput) -> str:
        t = inp.timeouts
        begin = workflow.execute_activity(
            names.BEGIN_DEPLOYMENT, inp, result_type=ActionPlan,
            start_to_close_timeout=timedelta(seconds=60), retry_policy=_retry(t, 10),
        )
        if not workflow.patched(CANCEL_AT_BEGIN_RECORDED):
            plan: ActionPlan = await begin
        else:
            plan, cancelled = await settled(begin)
            if cancelled:
                await self._cancelled_before_start(plan, t)
                raise asyncio.CancelledError()
        # A summary is part of the child's start command: runs begun before it replay without one.
        summaries = workflow.patched(CHILD_SUMMARIES)
        def child(instance: str) -> dict[str, Any]:
            return dict(arg=InstancePlan(plan=plan, instance=instance, timeouts=t),
                        id=ids.execution_instance(plan.execution_id, instance), task_queue=workflow.info().task_queue,
                        static_summary=f"{instance}: deployment" if summaries else None)

        try:
            if workflow.patched(INSTANCES_DECIDE_CANCEL):
                self._status = await gather_deciding([
                    workflow.start_child_workflow(DeploymentInstanceWorkflow.run, **child(i)) for i in plan.instances])
            else:
                self._status = await gather_instances([
                    workflow.execute_child_workflow(DeploymentInstanceWorkflow.run, **child(i))
                    for i in plan.instances])
        except asyncio.CancelledError:
            self._status = Status.CANCELED
            raise
        except BaseException:
            self._status = Status.ERROR
            raise
        finally:
            # The deployment of a migration on transfers ends the migration (workflows.shared).
            if of_migration():
                set_migration_state(self._status)
            await finish(plan.action_id, plan.execution_id, self._status, t)
        return self._status.value

    async def _cancelled_before_start(self, plan: ActionPlan, t: Timeouts) -> None:
        """A cancel before any instance started (an auto deployment's migration cancelled as it began):
        nothing was made, and every record says so."""
        self._status = Status.CANCELED
        for instance in plan.instances:
            p = InstancePlan(plan=plan, instance=instance, timeouts=t)
            await record_failure(p, DeployTask.OVERLAY, asyncio.CancelledError())
            await record_task(TaskUpdate(task=ref(p, DeployTask.CLEANUP), status=Status.UNSCHEDULED,
                                         message="Canceled before it started: there is nothing to clean up"), t)
        if of_migration():
            set_migration_state(self._status)
        await finish(plan.action_id, plan.execution_id, self._status, t)


@workflow.defn
class DeploymentInstanceWorkflow:
    def __init__(self) -> None:
        self._current: str | None = None
        #: the queue of the host holding the overlay, once the overlay step has chosen it
        self._host_queue: str | None = None

    @workflow.query
    def current_task(self) -> str | None:
        return self._current

    @workflow.run
    async def run(self, p: InstancePlan) -> dict[str, Any]:
        t, plan = p.timeouts, p.plan
        failover = workflow.patched(DEPLOYMENT_HOST_FAILOVER)
        say = summaries(p)
        # The second half of a migration's instance (workflows.instance), on the replica's view.
        steps = Steps(t, heartbeat=timedelta(seconds=t.heartbeat), disk_attempts=5, cleanup_attempts=20)
        step = first_step(p, DeployTask.OVERLAY)
        step.export_info = plan.export_info.get(p.instance)
        deployed: DeployedInstance | None = None
        imported: list[ImportedDisk] = []
        succeeded = False
        try:
            async def on_lost(failovers: int) -> None:
                # The host holding the overlay never took its next step: start again from a new overlay
                # of the replica disks (they are at the destination, not on that host), on another host.
                await record_task(TaskUpdate(task=ref(p, self._current or DeployTask.DEPLOY), status=Status.RUNNING,
                                             message=moved(self._host_queue, t, failovers)), t)
                self._host_queue = None  # until the next overlay: nothing more is scheduled there

            bootable, imported = await failing_over(lambda _n: self._disk_steps(steps, step, p, say), on_lost,
                                                    enabled=failover)

            assert self._host_queue is not None
            self._current = DeployTask.FINALIZE
            result = await steps.deploy(DeployInput(step=at(step, p, DeployTask.FINALIZE), disks=imported,
                                                    bootable=bootable), self._host_queue,
                                        say(DeployTask.FINALIZE))
            deployed = DeployedInstance.model_validate(result)
            succeeded = True
            return result
        except BaseException as err:
            if failover and host_lost(err):
                # Its queue has no worker: the cleanup (destination resources) runs from any host.
                self._host_queue = None
            await record_failure(p, self._current, err)
            raise
        finally:
            self._current = DeployTask.CLEANUP
            # On failure the destination provider removes the half-made instance; the overlay
            # goes with the scratch space. The replica is never touched.
            cleanup = CleanupInput(step=at(step, p, DeployTask.CLEANUP), disks=imported,
                                   deployed=deployed, succeeded=succeeded)
            patched = workflow.patched(CLEANUP_AS_MIGRATIONS)

            async def cleanup_failed(err: ActivityError) -> None:
                # Leftover scratch is a leak to report, not the deployment's outcome (as for migrations).
                await record_task(TaskUpdate(task=ref(p, DeployTask.CLEANUP), status=Status.ERROR,
                                             message=failure_message(err)), t)

            try:
                await steps.cleanup(cleanup, self._host_queue, on_failure=cleanup_failed if patched else None,
                                    summary=say(DeployTask.CLEANUP))
            except asyncio.CancelledError:
                # A cancel during the cleanup of a deployed instance ends CANCELED: the instance goes too.
                if succeeded and patched:
                    await steps.cleanup(cleanup.model_copy(update={"succeeded": False}), self._host_queue,
                                        on_failure=cleanup_failed, summary=say(DeployTask.CLEANUP))
                    await record_task(TaskUpdate(
                        task=ref(p, DeployTask.FINALIZE), status=Status.CANCELED,
                        message="Canceled by user request during the cleanup: the deployed instance was removed"), t)
                raise

    async def _disk_steps(self, steps: Steps, step: StepInput, p: InstancePlan,
                          say: Callable[[str], str | None]) -> tuple[bool, list[ImportedDisk]]:
        """The overlay on whichever host takes it, then OS morphing and the import on that host:
        (bootable, the imported disks)."""
        t, plan = p.timeouts, p.plan
        self._current = DeployTask.OVERLAY
        replicas = plan.replicas.get(p.instance, [])
        beat = short_step_heartbeat(t)
        # A replica kept as a snapshot is read down to this host first: a disk's worth of time, which
        # its progress heartbeats keep in check (a timeout is a scheduling option, not a command).
        reads = beat is not None and any(d.format in SNAPSHOT_FORMATS for d in replicas)
        o: OverlayResult = await workflow.execute_activity(
            names.CREATE_REPLICA_OVERLAY,
            OverlayInput(step=at(step, p, DeployTask.OVERLAY), disks=replicas, clone=plan.clone_disks,
                         transfer_id=plan.transfer_id),
            result_type=OverlayResult, task_queue=workflow.info().task_queue + "-data",
            start_to_close_timeout=timedelta(seconds=t.transfer if reads else t.short),
            retry_policy=_retry(t, 5), heartbeat_timeout=beat, summary=say(DeployTask.OVERLAY),
        )
        self._host_queue, step.workdir, disks = o.host_queue, o.workdir, o.disks

        bootable = False
        if not plan.skip_os_morphing:
            self._current = DeployTask.OS_MORPHING
            morphed = await steps.morph(
                MorphInput(step=at(step, p, DeployTask.OS_MORPHING), disks=disks,
                           user_scripts=plan.user_scripts, origin_type=plan.origin_type), o.host_queue,
                say(DeployTask.OS_MORPHING))
            disks, bootable = morphed.disks, morphed.bootable

        self._current = DeployTask.DEPLOY
        here = at(step, p, DeployTask.DEPLOY)
        # Flattened: the overlay becomes a standalone image, the replica stays where it is.
        flat = await steps.per_disk(names.CONVERT_DISK, here, disks, o.host_queue, DiskLocator, flatten=True,
                                    summary=say(DeployTask.DEPLOY))
        uploads = await steps.per_disk(names.UPLOAD_DISK, here, flat, o.host_queue, UploadResult,
                                       summary=say(DeployTask.DEPLOY))
        return bootable, [u.disk for u in uploads]
