"""Replicate one disk into a snapshot-chain replica (``providers.base.SnapshotReplicaProvider``).

The replica record names the last good snapshot, trusted, until a new child is complete: a failure,
a cancel or a killed worker leaves the replica exactly as the last good execution made it. An
unfinished child is discarded (here on failure or cancel, by the provider's next start after a kill),
and a retry starts a new child from the same parent, comparing with the same digest map.
"""

from __future__ import annotations

import asyncio
from typing import Any

from activities.changes import changed_since
from activities.context import dest_env
from activities.services import Services
from activities.task_recorder import heartbeating
from core.limits import replication_limit
from core.models import DiskLocator
from diskio.base import DiskSource
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
    # Blocking calls before the first progress heartbeat: beat meanwhile (no checkpoint to keep here).
    async with heartbeating():
        known = await asyncio.to_thread(store.replica, task.migration_id, task.instance, inp.disk.disk_id)
        good = (known is not None and known.trusted and known.digests is not None and known.path is not None
                and known.chunk_size == chunk and known.size_bytes == src.size)
        parent = known.path if good and known is not None else None
        previous = known.digests if good and known is not None else None
        changed = await changed_since(rec, source, step.snapshot, inp.disk,
                                      known.change_marker if good and known is not None else None)
        snapshot_id, target = await asyncio.to_thread(dest.start_replica_snapshot, env, task.migration_id,
                                                      task.instance, inp.disk.disk_id, src.size, parent)
    await rec.aevent(f"Replica snapshot {snapshot_id} of {inp.disk.disk_id} started"
                     + (f" as a child of {parent}" if parent else " (full sync: no trusted replica)"))
    reporter = await rec.progress(f"Replicating disk {inp.disk.disk_id} ({src.size} bytes)", src.size)

    async def progress(done: int, total: int) -> None:
        await reporter.transfer(TransferProgress(bytes_done=done, bytes_total=total))

    try:
        limit = replication_limit(step.source_environment, step.destination_environment)
        result = await sync_replica(src, target, previous, chunk_size=chunk, digest_size=DIGEST_SIZE,
                                    on_progress=progress, bandwidth_limit=limit, changed=changed)
    except BaseException:
        # Shielded from the cancel: the unfinished child must not outlive this attempt.
        await asyncio.shield(asyncio.to_thread(dest.discard_replica_snapshot, env, snapshot_id))
        raise
    finally:
        await asyncio.to_thread(target.close)
    await asyncio.to_thread(
        store.set_replica_snapshot, task.migration_id, task.instance, inp.disk.disk_id, snapshot_id=snapshot_id,
        size_bytes=src.size, chunk_size=chunk, digests=result.digests, execution_id=task.execution_id,
        change_marker=inp.disk.details.get("change_marker"))
    how = "full" if previous is None else "incremental, digests" if changed is None else "incremental, changed areas"
    await rec.aevent(
        f"Replica of {inp.disk.disk_id} up to date: read {result.bytes_read} bytes, wrote {result.bytes_written} "
        f"bytes in {result.chunks_written} changed chunk(s) ({how} sync) into snapshot {snapshot_id}")
    return ReplicaResult(disk=DiskLocator(disk_id=inp.disk.disk_id, size_bytes=src.size, format="ebs-snapshot",
                                          details={"snapshot_id": snapshot_id, "parent": parent}),
                         bytes_read=result.bytes_read, bytes_written=result.bytes_written, full_sync=previous is None)
