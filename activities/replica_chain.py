"""Replicate one disk into a snapshot-chain replica (``providers.base.SnapshotReplicaProvider``).

The replica record names the last good snapshot, trusted, until a new child is complete: a failure,
a cancel or a killed worker leaves the replica exactly as the last good execution made it. An
unfinished child is discarded on failure or cancel, and a retry starts a new child from the same
parent, comparing with the same digest map. After a killed worker, the retry resumes into the child
it left (``SnapshotReplicaProvider.pending_replica_snapshot``) where the checkpoint file in scratch
says the sync was: the child's blocks are kept by the service once written. The file is keyed by the
child's id, so it never claims blocks of another; the heartbeat, which names no child, is not used.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from activities.changes import changed_since
from activities.checkpoints import checkpoint_file, resume_ranges
from activities.context import dest_env
from activities.services import Services
from activities.steps import safe_name
from core.limits import replication_limit
from core.models import DiskLocator
from diskio.base import DiskSource, DiskTarget
from diskio.checkpoint import Checkpointer, CheckpointFile
from providers.base import ExportProvider, SnapshotReplicaProvider, TransferProgress
from workflows.transfer_types import DIGEST_SIZE, ReplicaResult
from workflows.types import DiskStepInput


async def replicate_to_snapshots(services: Services, inp: DiskStepInput, rec: Any, source: ExportProvider,
                                 src: DiskSource, dest: SnapshotReplicaProvider) -> ReplicaResult:
    from diskio.replica import sync_replica

    step, store = inp.step, services.store
    task = step.task
    assert step.snapshot is not None and task.execution_id is not None
    env, chunk = dest_env(step), dest.REPLICA_CHUNK
    # ``task_running`` heartbeats meanwhile, from before these blocking calls.
    known = await asyncio.to_thread(store.replica, task.migration_id, task.instance, inp.disk.disk_id)
    good = (known is not None and known.trusted and known.digests is not None and known.path is not None
            and known.chunk_size == chunk and known.size_bytes == src.size)
    parent = known.path if good and known is not None else None
    previous = known.digests if good and known is not None else None
    changed = await changed_since(rec, source, step.snapshot, inp.disk,
                                  known.change_marker if good and known is not None else None)
    resumed = await asyncio.to_thread(_resumable, inp, dest, env, src.size, parent)
    file: CheckpointFile | None
    if resumed is not None:
        (snapshot_id, target), file, resume = resumed
    else:
        snapshot_id, target = await asyncio.to_thread(
            dest.start_replica_snapshot, env, task.migration_id, task.instance, inp.disk.disk_id, src.size,
            parent, task.execution_id)
        file, resume = _checkpoint(inp, snapshot_id, src.size), 0
    if resume:
        await rec.aevent(f"Resuming the sync of {inp.disk.disk_id} into replica snapshot {snapshot_id} from its "
                         f"checkpoint: {resume} of {src.size} bytes already across")
    else:
        await rec.aevent(f"Replica snapshot {snapshot_id} of {inp.disk.disk_id} started"
                         + (f" as a child of {parent}" if parent else " (full sync: no trusted replica)"))
    reporter = await rec.progress(f"Replicating disk {inp.disk.disk_id} ({src.size} bytes)", src.size, resume)

    async def progress(done: int, total: int) -> None:
        await reporter.transfer(TransferProgress(bytes_done=done, bytes_total=total, checkpoint=[(0, done)]))

    try:
        limit = replication_limit(step.source_environment, step.destination_environment)
        result = await sync_replica(src, target, previous, chunk_size=chunk, digest_size=DIGEST_SIZE,
                                    on_progress=progress, bandwidth_limit=limit, changed=changed,
                                    resume_from=resume, durable=Checkpointer(file) if file is not None else None)
    except BaseException:
        # Shielded from the cancel: the unfinished child must not outlive this attempt.
        await asyncio.shield(asyncio.to_thread(dest.discard_replica_snapshot, env, snapshot_id))
        raise
    finally:
        await asyncio.to_thread(target.close)
    if file is not None:
        await asyncio.to_thread(file.remove)  # the child is complete: nothing to resume, nothing left in scratch
    await asyncio.to_thread(
        store.set_replica_snapshot, task.migration_id, task.instance, inp.disk.disk_id, snapshot_id=snapshot_id,
        size_bytes=src.size, chunk_size=chunk, digests=result.digests, execution_id=task.execution_id,
        change_marker=inp.disk.details.get("change_marker"))
    how = "full" if previous is None else "incremental, digests" if changed is None else "incremental, changed areas"
    earlier = (f"; {result.chunks_resumed} chunk(s) written by an earlier attempt, {result.bytes_reread} bytes "
               "re-read to hash them" if resume else "")
    await rec.aevent(
        f"Replica of {inp.disk.disk_id} up to date: read {result.bytes_read} bytes, wrote {result.bytes_written} "
        f"bytes in {result.chunks_written} changed chunk(s) ({how} sync) into snapshot {snapshot_id}{earlier}")
    return ReplicaResult(disk=DiskLocator(disk_id=inp.disk.disk_id, size_bytes=src.size, format="ebs-snapshot",
                                          details={"snapshot_id": snapshot_id, "parent": parent}),
                         bytes_read=result.bytes_read, bytes_written=result.bytes_written, full_sync=previous is None)


def _checkpoint(inp: DiskStepInput, snapshot_id: str, size: int) -> CheckpointFile | None:
    """The checkpoint file of the sync into ``snapshot_id``, in the step's scratch (none without one).

    After a failover the key names the source snapshot's count too, as the local replica's does: the
    lost host's child holds chunks of the old source snapshot (in practice, that child is discarded)."""
    step = inp.step
    if not step.workdir:
        return None
    key = f"replica-snapshot {step.task.execution_id} {inp.disk.disk_id} {snapshot_id} {size}" + (
        f" snapshot {inp.failovers + 1}" if inp.failovers else "")
    return checkpoint_file(Path(step.workdir) / "replica", safe_name(inp.disk.disk_id), key)


def _resumable(inp: DiskStepInput, dest: SnapshotReplicaProvider, env: Any, size: int, parent: str | None
               ) -> tuple[tuple[str, DiskTarget], CheckpointFile, int] | None:
    """(the unfinished child and its target, its checkpoint file, the byte offset to resume from), when a
    killed attempt of this execution left a child over ``parent`` that its checkpoint says is partly written.
    A child without such a checkpoint is discarded: the new one starts from zero."""
    task = inp.step.task
    assert task.execution_id is not None
    if not inp.step.workdir:
        return None
    found = dest.pending_replica_snapshot(env, task.migration_id, task.instance, inp.disk.disk_id, size, parent,
                                          task.execution_id)
    if found is None:
        return None
    file = _checkpoint(inp, found[0], size)
    assert file is not None
    done = resume_ranges(file, None)
    resume = done[0][1] if done and done[0][0] == 0 else 0
    if not resume:
        found[1].close()
        dest.discard_replica_snapshot(env, found[0])
        file.remove()
        return None
    return found, file, resume
