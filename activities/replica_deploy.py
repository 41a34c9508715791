"""Deployments of replicas kept as snapshot chains (``providers.base.SnapshotReplicaProvider``, EBS).

The overlay step reads the replica snapshot down into a sparse raw *base* in the deployment's
scratch and puts a qcow2 overlay on it: OS morphing writes into the overlay, as for a local replica.
The convert step leaves such a disk as it is, and the upload step writes the blocks where the
overlay differs from the base into a child of the replica snapshot: only the delta moves up, and the
instance's root is that child. The replica snapshot can't be written (nor is it given to an AMI),
so ``clone_disks: false`` changes nothing here: the replica stays as it was, and trusted.

With ``skip_os_morphing`` nothing reads the disk: the base is not read down and the child has no
blocks of its own. A child rather than the replica snapshot itself, so that the AMI's root is the
deployment's own snapshot, which the destination cleanup may delete (it deletes an AMI's snapshots).

Scratch (base and overlay) goes with the deployment's workdir in the cleanup step.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from activities.context import dest_env, step_context
from activities.services import Services
from activities.task_recorder import TaskRecorder
from core.limits import bandwidth_limit
from core.models import DiskLocator
from diskio.keepalive import beating, in_thread
from providers.base import SnapshotReplicaProvider, TransferContext, TransferProgress
from workflows.transfer_types import OverlayInput
from workflows.types import DiskStepInput, StepInput, UploadResult

if TYPE_CHECKING:
    from diskio.base import DiskSource, Extent

#: ``DiskLocator.details`` key of a deployment disk whose replica is this snapshot
REPLICA_SNAPSHOT = "replica_snapshot"
#: bytes a base read moves per chunk (4 EBS blocks) and chunks in flight: GetSnapshotBlock is a round trip
READ_CHUNK, READ_LANES = 2 * 1024 * 1024, 8


def is_snapshot_delta(disk: DiskLocator) -> bool:
    """A deployment disk that goes up as a child of its replica snapshot, not as a whole image."""
    return bool(disk.details.get(REPLICA_SNAPSHOT))


async def _destination(services: Services, step: StepInput) -> SnapshotReplicaProvider:
    return await services.provider(step.destination_endpoint_id, SnapshotReplicaProvider, step.task.migration_id)


async def snapshot_overlay(services: Services, inp: OverlayInput, rec: TaskRecorder, workdir: Path,
                           disk: DiskLocator, name: str) -> DiskLocator:
    """The deployment's view of one replica snapshot (``disk.path`` is the snapshot id); ``name``: the
    disk's id as a file name."""
    from diskio.copier import copy_disk
    from diskio.local import LocalFileTarget

    snapshot_id, step = str(disk.path), inp.step
    details = {**disk.details, REPLICA_SNAPSHOT: snapshot_id}
    if not inp.clone:
        await rec.aevent(f"clone_disks is false, but replica snapshot {snapshot_id} can't be written: the "
                         "deployment works on a view of it, as with clone_disks true, and the replica stays trusted")
    if step.skip_os_morphing:
        await rec.aevent(f"OS morphing is skipped: replica snapshot {snapshot_id} is not read; the deployment's "
                         "disk is a child of it with no blocks of its own")
        return disk.model_copy(update={"path": None, "format": "raw", "details": details})
    dest = await _destination(services, step)
    base = workdir / "base" / f"{name}.raw"
    base.parent.mkdir(parents=True, exist_ok=True)
    base.unlink(missing_ok=True)  # a retry reads it again: nothing says what a killed attempt left
    src = await asyncio.to_thread(dest.open_replica_snapshot, dest_env(step), snapshot_id, disk.size_bytes)
    target = LocalFileTarget(base, disk.size_bytes)
    try:
        allocated = sum(e.length for e in await asyncio.to_thread(src.extents))
        reporter = await rec.progress(f"Reading replica snapshot {snapshot_id} of {disk.disk_id}", allocated)
        result = await copy_disk(src, target, on_progress=reporter.transfer, chunk_size=READ_CHUNK,
                                 lanes=READ_LANES,
                                 bandwidth_limit=bandwidth_limit(step.destination_environment,
                                                                 "destination_environment"))
    finally:
        await asyncio.to_thread(src.close)
        await asyncio.to_thread(target.close)
    overlay = workdir / "overlay" / f"{name}.qcow2"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    overlay.unlink(missing_ok=True)
    await asyncio.to_thread(subprocess.run, [
        "qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay),
    ], check=True, capture_output=True)
    await rec.aevent(f"Replica snapshot {snapshot_id} read into {base} ({result.bytes_read} bytes); "
                     f"copy-on-write overlay {overlay} on it")
    return disk.model_copy(update={"path": str(overlay), "format": "qcow2",
                                   "details": {**details, "base": str(base)}})


async def upload_delta(services: Services, inp: DiskStepInput, rec: TaskRecorder, ctx: TransferContext) -> UploadResult:
    """The deployment's changes to one disk, as a child of its replica snapshot."""
    from diskio.local import open_local_source
    from diskio.overlay import changed_blocks, own_extents

    step, disk = inp.step, inp.disk
    assert step.export_info is not None
    dest = await _destination(services, step)
    view: DiskSource | None = None
    changed: list[Extent] = []
    # The comparison reads every block the morph touched, twice (an initramfs rebuild touches hundreds
    # of MiB), before the upload reports any progress: heartbeat meanwhile, as ``import_disk`` does
    # while it counts blocks, with what an earlier attempt put (so that a retry still resumes from it).
    resumed = TransferProgress(0, 0, list(ctx.checkpoint or []))
    try:
        if disk.path is not None:
            base = await asyncio.to_thread(open_local_source, str(disk.details["base"]))
            try:
                view = await asyncio.to_thread(open_local_source, disk.path, disk.format)
                touched = await beating(lambda: ctx.progress(resumed), in_thread(own_extents, disk.path))
                changed = await beating(lambda: ctx.progress(resumed),
                                        in_thread(changed_blocks, view, base, touched, dest.REPLICA_CHUNK))
            finally:
                await asyncio.to_thread(base.close)
            await rec.aevent(f"{disk.disk_id}: the overlay holds {sum(e.length for e in touched)} bytes, "
                             f"{sum(e.length for e in changed)} of them in blocks that differ from the replica")
        action = await step_context(services, step)
        imported = await dest.import_replica_delta(dest_env(step), step.export_info, disk, view, changed, ctx,
                                                   action)
    finally:
        if view is not None:
            await asyncio.to_thread(view.close)
    return UploadResult(disk=imported)
