"""Activities of transfers and deployments that migrations don't have: the execution and
deployment records, replica-disk sync and the copy-on-write overlay a deployment starts from.

Every other step (validate, snapshot, OS morphing, convert, upload, deploy, cleanup) is the
migration's own activity (``activities.steps``), called with the transfer's task names.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from temporalio import activity

from activities import names
from activities.changes import changed_since
from activities.checkpoints import checkpoint_file, resume_ranges
from activities.context import dest_env
from activities.services import Services
from activities.slots import source_slot
from activities.steps import previous_heartbeat, safe_name, scratch_dir
from activities.task_recorder import task_running
from core.errors import Conflict, InvalidInput
from core.limits import replication_limit
from core.models import DiskLocator, InstanceInfo
from core.tasks import OS_MORPHING_SKIPPED
from providers.base import (
    BaseProvider,
    ChangeTrackingSource,
    ExportProvider,
    ReplicaProvider,
    SnapshotReplicaProvider,
    TransferProgress,
)
from store.models import Migration, ReplicaDisk
from workflows import ids
from workflows.transfer_types import (
    DIGEST_SIZE,
    REPLICA_CHUNK,
    SNAPSHOT_FORMATS,
    ActionPlan,
    AutoDeployment,
    BeginExecution,
    DeploymentInput,
    FinishExecution,
    OverlayInput,
    OverlayResult,
    ReplicaResult,
    TransferTask,
)
from workflows.types import DiskStepInput

if TYPE_CHECKING:
    from diskio.checkpoint import CheckpointFile


def _plan(row: Migration, execution_id: str, transfer_id: str) -> ActionPlan:
    return ActionPlan(
        action_id=row.id, execution_id=execution_id, transfer_id=transfer_id,
        origin_endpoint_id=row.origin_endpoint_id, destination_endpoint_id=row.destination_endpoint_id,
        instances=list(row.instances), source_environment=row.source_environment or {},
        destination_environment=row.destination_environment or {}, network_map=row.network_map or {},
        storage_mappings=row.storage_mappings or {}, user_scripts=row.user_scripts or {},
        skip_os_morphing=row.skip_os_morphing, clone_disks=row.clone_disks,
    )


def _sync_plan(known: ReplicaDisk | None, path: Path, size: int, execution_id: str,
               file: CheckpointFile | None, moved: bool = False) -> tuple[bytes | None, int]:
    """(digest map to compare with or None for a full sync, byte offset to resume from).

    A map is usable when the replica was trusted, or when it is this execution's own retry: every
    chunk an earlier attempt wrote came from the same snapshot, so comparing with the map from
    before the execution still tells which chunks differ. The same reasoning lets a retry resume
    where its checkpoint file (or its last heartbeat, if further) says the sync was, and keeps a
    full sync's zero chunks zero (no attempt writes them).

    ``moved``: the instance moved off a lost host to a new snapshot (``DiskStepInput.failovers``).
    Chunks the lost host wrote came from the old snapshot, and the map does not say which: a chunk
    the new snapshot has as it was before the execution would compare equal and keep the old
    snapshot's bytes. So a replica this execution left untrusted is synced in full; a trusted one
    (the lost host never wrote into it) still compares with its map. The checkpoint file is keyed
    per snapshot by the caller, so nothing resumes across snapshots.
    """
    if known is None or not path.exists() or known.chunk_size != REPLICA_CHUNK or known.size_bytes != size:
        return None, 0
    own_retry = known.last_execution_id == execution_id and not known.trusted
    usable = known.digests is not None and (known.trusted or (own_retry and not moved))
    resume = 0
    if own_retry:
        beat = previous_heartbeat()
        if beat is not None and not beat.checkpoint and beat.bytes_done:
            # an attempt from before the sync's heartbeat named its prefix as a range
            beat = beat.model_copy(update={"checkpoint": [(0, beat.bytes_done)]})
        done = resume_ranges(file, beat, path) if file is not None else (
            [(0, beat.bytes_done)] if beat else [])
        resume = done[0][1] if done and done[0][0] == 0 else 0
    return (known.digests if usable else None), resume


class TransferActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    @activity.defn(name=names.BEGIN_TRANSFER_EXECUTION)
    async def begin_execution(self, inp: BeginExecution) -> ActionPlan:
        """The execution's plan; a scheduled run first creates its execution (or is refused)."""
        store = self.services.store
        if inp.create and await asyncio.to_thread(store.find_execution, inp.execution_id) is None:
            row = await asyncio.to_thread(store.get_action, "transfer", None, inp.transfer_id)
            try:
                await asyncio.to_thread(
                    store.create_execution, inp.transfer_id, inp.execution_id, instances=list(row.instances),
                    task_types=[t.value for t in TransferTask], workflow_id=inp.workflow_id)
            except Conflict as exc:
                return ActionPlan(action_id=row.id, execution_id="", transfer_id=row.id,
                                  origin_endpoint_id="", destination_endpoint_id="", instances=[],
                                  refused=str(exc))
        row = await asyncio.to_thread(store.get_action, "transfer", None, inp.transfer_id)
        plan = _plan(row, inp.execution_id, row.id)
        origin = await asyncio.to_thread(store.get_endpoint, None, row.origin_endpoint_id)
        return plan.model_copy(update={"origin_type": origin.type, "shutdown_instances": inp.shutdown_instances,
                                       "auto_deploy": inp.auto_deploy})

    @activity.defn(name=names.FINISH_TRANSFER_EXECUTION)
    async def finish_execution(self, inp: FinishExecution) -> None:
        store = self.services.store
        # A migration that runs as a transfer (api.live_migrations) leaves no replica behind, as the
        # one-shot migration left no scratch copy. Done here, in an activity every such run already
        # calls, so that running workflows need no new command; and before the status, so that a
        # migration reads as ended once nothing of it is left.
        spent = await asyncio.to_thread(store.spent_replicas, inp.action_id, inp.status)
        if spent is not None:
            await self._drop_replicas(spent)
            await self._release_trust(spent)
        await asyncio.to_thread(store.set_execution_status, inp.action_id, inp.execution_id, inp.status)

    async def _release_trust(self, transfer: Migration) -> None:
        """The migration has ended: its Keystone trust goes, as the one-shot workflow's did at its end."""
        keystone = self.services.keystone
        if not transfer.trust_id or keystone is None:
            return
        existed = await asyncio.to_thread(keystone.delete_trust, transfer.trust_id)
        await asyncio.to_thread(self.services.store.clear_transfer_trust, transfer.id)
        activity.logger.info("migration %s: Keystone trust %s", transfer.id,
                             "deleted" if existed else "was already gone")

    async def _drop_replicas(self, transfer: Migration) -> None:
        """Best effort: a replica left behind is a leak to report, not the migration's outcome
        (``DELETE /migrations/{id}`` removes what is left)."""
        store = self.services.store
        try:
            dest = await self.services.provider(transfer.destination_endpoint_id, BaseProvider, transfer.id)
            if isinstance(dest, (ReplicaProvider, SnapshotReplicaProvider)):
                await asyncio.to_thread(dest.delete_replica_disks, transfer.destination_environment or {},
                                        transfer.id)
                await asyncio.to_thread(store.forget_replicas, transfer.id)
            source = await self.services.provider(transfer.origin_endpoint_id, BaseProvider, transfer.id)
            if isinstance(source, ChangeTrackingSource):
                for instance in transfer.instances:
                    await asyncio.to_thread(source.release_tracking, transfer.source_environment or {},
                                            instance, transfer.id)
        except Exception as exc:  # reported; the DELETE of the migration tries again
            activity.logger.warning("migration %s: its replica disks were not all removed: %s", transfer.id, exc)

    @activity.defn(name=names.BEGIN_DEPLOYMENT)
    async def begin_deployment(self, inp: DeploymentInput) -> ActionPlan:
        store = self.services.store
        row = await asyncio.to_thread(store.get_action, "deployment", None, inp.deployment_id)
        assert row.transfer_id is not None
        executions = await asyncio.to_thread(store.list_executions, row.id)
        plan = _plan(row, executions[0].id, row.transfer_id)
        origin = await asyncio.to_thread(store.get_endpoint, None, row.origin_endpoint_id)
        replicas: dict[str, list[DiskLocator]] = {}
        for r in await asyncio.to_thread(store.replicas, row.transfer_id):
            replicas.setdefault(r.instance, []).append(
                DiskLocator(disk_id=r.disk_id, size_bytes=r.size_bytes, format=r.format, path=r.path))
        export_info = {i: InstanceInfo.model_validate(v["export_info"]) for i, v in (row.info or {}).items()
                       if v.get("export_info")}
        return plan.model_copy(update={"origin_type": origin.type, "replicas": replicas,
                                       "export_info": export_info})

    @activity.defn(name=names.CREATE_AUTO_DEPLOYMENT)
    async def create_auto_deployment(self, inp: AutoDeployment) -> str:
        """auto_deploy: the deployment of a transfer whose execution just completed."""
        store = self.services.store
        if await asyncio.to_thread(store.find_execution, inp.deployment_execution_id) is not None:
            return inp.deployment_id  # a retried attempt: already created
        transfer = await asyncio.to_thread(store.get_action, "transfer", None, inp.transfer_id)
        await asyncio.to_thread(
            store.create_deployment, inp.transfer_id, inp.deployment_id, inp.deployment_execution_id,
            workflow_id=ids.deployment(inp.deployment_id), user_id=transfer.user_id,
            options={"skip_os_morphing": transfer.skip_os_morphing, "clone_disks": transfer.clone_disks},
            deployer_id=inp.execution_id)
        return inp.deployment_id

    @activity.defn(name=names.REPLICATE_DISK)
    async def replicate_disk(self, inp: DiskStepInput) -> ReplicaResult:
        from diskio.checkpoint import Checkpointer
        from diskio.local import LocalFileTarget
        from diskio.replica import sync_replica

        step, store = inp.step, self.services.store
        task = step.task
        assert step.snapshot is not None and task.execution_id is not None
        async with task_running(self.services, task) as rec:
            source = await self.services.provider(step.origin_endpoint_id, ExportProvider, step.task.migration_id)
            dest = await self.services.provider(step.destination_endpoint_id, BaseProvider, step.task.migration_id)
            src = await asyncio.to_thread(source.open_disk, step.snapshot, inp.disk)
            if isinstance(dest, SnapshotReplicaProvider):
                from activities.replica_chain import replicate_to_snapshots

                try:
                    async with source_slot(self.services, source, step.snapshot, rec):
                        return await replicate_to_snapshots(self.services, inp, rec, source, src, dest)
                finally:
                    await asyncio.to_thread(src.close)
            if not isinstance(dest, ReplicaProvider):
                await asyncio.to_thread(src.close)
                raise InvalidInput("The destination endpoint can't hold replica disks")
            try:
                replica = await asyncio.to_thread(dest.replica_disk, dest_env(step), task.migration_id,
                                                  task.instance, inp.disk.disk_id, src.size)
                assert replica.path is not None
                known = await asyncio.to_thread(store.replica, task.migration_id, task.instance, inp.disk.disk_id)
                path = Path(replica.path)
                # In this host's scratch, beside the snapshot that the sync reads (the replica may be
                # on an endpoint's storage, which is not ours to leave files in).
                # After a failover, the key names the snapshot (its count): a host that comes back and takes
                # the new snapshot must not resume from the lost one's checkpoint.
                key = f"replica {task.execution_id} {inp.disk.disk_id} {path} {src.size}" + (
                    f" snapshot {inp.failovers + 1}" if inp.failovers else "")
                file = checkpoint_file(Path(step.workdir) / "replica", safe_name(inp.disk.disk_id), key) \
                    if step.workdir else None
                previous, resume = _sync_plan(known, path, src.size, task.execution_id, file, inp.failovers > 0)
                # From here until trust_replica, the replica is not trusted: a failure or a cancel
                # leaves it marked, and the next execution re-syncs it in full.
                await asyncio.to_thread(
                    store.distrust_replica, task.migration_id, task.instance, inp.disk.disk_id, path=str(path),
                    fmt="raw", size_bytes=src.size, chunk_size=REPLICA_CHUNK, execution_id=task.execution_id,
                    full=previous is None)
                if resume:
                    await rec.aevent(f"Resuming the sync of {inp.disk.disk_id} from its checkpoint: "
                                     f"{resume} of {src.size} bytes already across")
                elif previous is None:
                    path.unlink(missing_ok=True)
                    await rec.aevent(f"Full sync of {inp.disk.disk_id}: no trusted replica to compare with")
                changed = await changed_since(rec, source, step.snapshot, inp.disk,
                                              known.change_marker if previous is not None and known else None)
                reporter = await rec.progress(f"Replicating disk {inp.disk.disk_id} ({src.size} bytes)", src.size,
                                              resume or 0)

                async def progress(done: int, total: int) -> None:
                    await reporter.transfer(TransferProgress(bytes_done=done, bytes_total=total,
                                                             checkpoint=[(0, done)]))

                target = await asyncio.to_thread(LocalFileTarget, path, src.size)
                try:
                    limit = replication_limit(step.source_environment, step.destination_environment)
                    # The source host's transfer limit holds for replications as for exports.
                    async with source_slot(self.services, source, step.snapshot, rec):
                        result = await sync_replica(src, target, previous, chunk_size=REPLICA_CHUNK,
                                                    digest_size=DIGEST_SIZE, on_progress=progress,
                                                    bandwidth_limit=limit, resume_from=resume, changed=changed,
                                                    durable=Checkpointer(file) if file is not None else None)
                finally:
                    await asyncio.to_thread(target.close)
            finally:
                await asyncio.to_thread(src.close)
            await asyncio.to_thread(store.trust_replica, task.migration_id, task.instance, inp.disk.disk_id,
                                    result.digests, task.execution_id, inp.disk.details.get("change_marker"))
            if file is not None:
                # Trusted: the next attempt, if any, starts from the map; scratch keeps no leftovers.
                await asyncio.to_thread(file.remove)
            how = ("full" if previous is None else "incremental, digests" if changed is None
                   else "incremental, changed areas")
            await rec.aevent(
                f"Replica of {inp.disk.disk_id} up to date: read {result.bytes_read} bytes, wrote "
                f"{result.bytes_written} bytes in {result.chunks_written} changed chunk(s) ({how} sync)")
            return ReplicaResult(disk=replica, bytes_read=result.bytes_read, bytes_written=result.bytes_written,
                                 full_sync=previous is None)

    @activity.defn(name=names.CREATE_REPLICA_OVERLAY)
    async def create_overlay(self, inp: OverlayInput) -> OverlayResult:
        """qcow2 overlays on the replica disks: OS morphing writes there, never into the replica.

        With ``clone`` False, the replica disks themselves (Coriolis ``clone_disks: false``). A replica
        kept as a snapshot is read down first (``activities.replica_deploy``).
        """
        step = inp.step
        async with task_running(self.services, step.task) as rec:
            workdir = scratch_dir(self.services.settings.scratch, step.task)
            (workdir / "overlay").mkdir(parents=True, exist_ok=True)
            # Recorded so that a force-cancel (which skips the workflow's cleanup) can still clean up.
            for name, value in (("workdir", str(workdir)), ("host_queue", self.services.settings.host_task_queue)):
                await asyncio.to_thread(self.services.store.set_instance_info, step.task.migration_id,
                                        step.task.instance, name, value)
            out = []
            for disk in inp.disks:
                if disk.format in SNAPSHOT_FORMATS:
                    from activities.replica_deploy import snapshot_overlay

                    out.append(await snapshot_overlay(self.services, inp, rec, workdir, disk, safe_name(disk.disk_id)))
                    continue
                if disk.path is None or not Path(disk.path).exists():
                    raise InvalidInput(f"Replica disk {disk.disk_id} is missing: execute the transfer anew")
                if not inp.clone:
                    # Marked before anything writes: from here the replica no longer matches its
                    # digest map, so no later deployment trusts it and the next execution re-syncs it.
                    assert inp.transfer_id is not None
                    await asyncio.to_thread(self.services.store.consume_replica, inp.transfer_id,
                                            step.task.instance, disk.disk_id)
                    out.append(disk)
                    await rec.aevent(f"clone_disks is false: deploying on replica {disk.path} itself; the "
                                     "transfer must be executed anew before its next deployment")
                    continue
                overlay = workdir / "overlay" / f"{safe_name(disk.disk_id)}.qcow2"
                overlay.unlink(missing_ok=True)
                await asyncio.to_thread(subprocess.run, [
                    "qemu-img", "create", "-q", "-f", "qcow2", "-b", disk.path, "-F", disk.format, str(overlay),
                ], check=True, capture_output=True)
                out.append(disk.model_copy(update={"format": "qcow2", "path": str(overlay)}))
                await rec.aevent(f"Copy-on-write overlay {overlay} on replica {disk.path}")
            if step.skip_os_morphing:
                # The step after this one would be OS morphing: a deployment without it has no
                # OS_MORPHING task (as in Coriolis), so its users read why here.
                await rec.aevent(OS_MORPHING_SKIPPED)
            return OverlayResult(disks=out, host_queue=self.services.settings.host_task_queue, workdir=str(workdir))
