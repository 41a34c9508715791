"""A deployment's disk on AWS: a child of the replica snapshot holding only what the deployment changed.

The child is tagged as an upload of the deployment (role ``import-snapshot``, the deployment's id),
so the destination cleanup treats it as any uploaded snapshot: on failure or cancel it goes; on
success it goes with the AMI unless ``keep_image``. The replica snapshot is never written (EBS
snapshots are immutable) and no AMI names it, so no deployment's cleanup can reach it.

Blocks go through ``ChildSnapshotTarget`` (512 KiB blocks, SHA-256 per PutSnapshotBlock, zero blocks
written since the parent's would show through). A retry returns a child that a previous attempt
completed and checked. It resumes into one still being written, as ``importer`` does: the blocks an
attempt put are its checkpoint (``ctx.checkpoint``, byte ranges of whole blocks; kept durable through
``ctx.durable``), a pending snapshot takes more PutSnapshotBlock calls, and CompleteSnapshot is told
the blocks of every attempt. Without a checkpoint, or with a child completed but not checked, the
child is deleted and the delta written again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from core.errors import IntegrityError
from core.models import DiskLocator, ImportedDisk, InstanceInfo
from diskio.base import DiskSource, Extent
from diskio.keepalive import beating, in_thread
from diskio.limiter import RateLimiter
from diskio.ranges import merge
from providers.aws import tags as t
from providers.aws.ebs import EBS_BLOCK_SIZE, GIB, sha256_b64, volume_size_gib
from providers.aws.errors import aws_errors
from providers.aws.importer import DEFAULT_SNAPSHOT_TIMEOUT_MIN, EBS_LANES, find_import_snapshot, wait_completed
from providers.aws.replica import ChildSnapshotTarget, discard
from providers.aws.session import AwsClients
from providers.base import ActionContext, TransferContext, TransferProgress


def block_indexes(changed: list[Extent], size: int) -> list[int]:
    """The snapshot blocks that ``changed`` touches, within a disk of ``size`` bytes."""
    out: set[int] = set()
    for e in changed:
        out.update(range(e.offset // EBS_BLOCK_SIZE, min(-(-e.end // EBS_BLOCK_SIZE), -(-size // EBS_BLOCK_SIZE))))
    return sorted(out)


def _start(clients: AwsClients, env: Mapping[str, Any], export_info: InstanceInfo, disk: DiskLocator,
           parent: str, gib: int, action: ActionContext) -> str:
    tags = {"Name": f"sterna {export_info.name} {disk.disk_id}", **t.action_tags(action), t.DISK_TAG: disk.disk_id,
            t.ROLE_TAG: t.ROLE_IMPORT_SNAPSHOT, t.SOURCE_INSTANCE_TAG: export_info.name,
            t.UPLOAD_TAG: t.UPLOAD_IN_PROGRESS, t.PARENT_TAG: parent}
    timeout = int(env.get("snapshot_timeout_minutes") or DEFAULT_SNAPSHOT_TIMEOUT_MIN)
    with aws_errors(f"starting the deployment snapshot of disk {disk.disk_id}", clients.conn.secrets):
        return str(clients.ebs.start_snapshot(
            VolumeSize=gib, ParentSnapshotId=parent, Tags=t.tag_list(tags), Timeout=max(10, min(timeout, 4320)),
            Description=f"Sterna deployment of disk {disk.disk_id} of {export_info.name}"[:255],
        )["SnapshotId"])


def _finish(clients: AwsClients, target: ChildSnapshotTarget, sums: dict[int, str], check: bool,
            stop: threading.Event) -> None:
    """Wait until AWS completed the child; read what was written back and compare; tag it complete."""
    sid = target.snapshot_id
    wait_completed(clients, sid, stop)
    bad = [i for i in sorted(sums) if check and
           sha256_b64(target.read(i * EBS_BLOCK_SIZE, EBS_BLOCK_SIZE).ljust(EBS_BLOCK_SIZE, b"\0")) != sums[i]]
    if bad:
        discard(clients, sid)  # a completed snapshot takes no more writes: the retry starts a new one
        raise IntegrityError(f"snapshot {sid} read back differs in {len(bad)} block(s): {bad[:5]}")
    with aws_errors(f"tagging snapshot {sid}", clients.conn.secrets):
        clients.ec2.create_tags(Resources=[sid], Tags=t.tag_list({t.UPLOAD_TAG: t.UPLOAD_COMPLETE}))


async def import_delta(clients: AwsClients, env: Mapping[str, Any], export_info: InstanceInfo, disk: DiskLocator,
                       parent: str, view: DiskSource | None, changed: list[Extent], ctx: TransferContext,
                       action: ActionContext) -> ImportedDisk:
    """See ``providers.base.SnapshotReplicaProvider.import_replica_delta``."""
    gib = volume_size_gib(disk.size_bytes)
    existing = await asyncio.to_thread(find_import_snapshot, clients, action.action_id, export_info.name,
                                       disk.disk_id)
    if existing and t.as_dict(existing.get("Tags")).get(t.UPLOAD_TAG) == t.UPLOAD_COMPLETE:
        await ctx.aevent(
            f"disk {disk.disk_id}: child snapshot {existing['SnapshotId']} of {parent} was already written")
        return ImportedDisk(disk_id=disk.disk_id, details={
            "snapshot_id": existing["SnapshotId"], "volume_size_gib": int(existing["VolumeSize"]),
            "parent_snapshot_id": parent, "reused": True})
    indexes = block_indexes(changed, disk.size_bytes)
    if indexes and view is None:
        raise ValueError("changed blocks without a view to read them from")
    resuming = bool(existing and ctx.checkpoint is not None
                    and t.as_dict(existing.get("Tags")).get(t.UPLOAD_TAG) == t.UPLOAD_IN_PROGRESS)
    if existing and not resuming:
        await asyncio.to_thread(discard, clients, str(existing["SnapshotId"]))
    done = {o // EBS_BLOCK_SIZE + k for o, n in (ctx.checkpoint or []) if resuming
            for k in range(-(-int(n) // EBS_BLOCK_SIZE))} & set(indexes)
    sid = str(existing["SnapshotId"]) if existing and resuming else \
        await asyncio.to_thread(_start, clients, env, export_info, disk, parent, gib, action)
    todo = [i for i in indexes if i not in done]
    await ctx.aevent(f"disk {disk.disk_id}: writing {len(todo)} changed block(s) into snapshot {sid}, a child of "
                     f"replica snapshot {parent}"
                     + (f", resuming after {len(done)} block(s) already written" if done else ""))
    target = ChildSnapshotTarget(clients, sid, gib * GIB, has_parent=True, done_state=t.UPLOAD_WRITTEN)
    target.previously_written = len(done)
    limiter = RateLimiter(ctx.bandwidth_limit) if ctx.bandwidth_limit else None
    sums: dict[int, str] = {}

    def put(index: int) -> None:
        assert view is not None
        if limiter is not None:
            limiter.acquire(EBS_BLOCK_SIZE)
        block = view.read(index * EBS_BLOCK_SIZE, EBS_BLOCK_SIZE).ljust(EBS_BLOCK_SIZE, b"\0")
        target.write(index * EBS_BLOCK_SIZE, block)
        sums[index] = sha256_b64(block)

    def ranges() -> list[tuple[int, int]]:
        return merge([(i * EBS_BLOCK_SIZE, EBS_BLOCK_SIZE) for i in sorted(done | target.written)])

    total = len(indexes) * EBS_BLOCK_SIZE
    if ctx.durable is not None:
        await ctx.durable.begin(target, ranges())
    await ctx.progress(TransferProgress(len(done) * EBS_BLOCK_SIZE, total, ranges()))
    for start in range(0, len(todo), EBS_LANES):
        # A batch of blocks in flight at once; between batches the checkpoint is kept, the progress call
        # heartbeats it and a cancel lands.
        await asyncio.gather(*(asyncio.to_thread(put, i) for i in todo[start:start + EBS_LANES]))
        if ctx.durable is not None:
            await ctx.durable.offer(ranges())
        await ctx.progress(TransferProgress((len(done) + len(target.written)) * EBS_BLOCK_SIZE, total, ranges()))
    if ctx.durable is not None:
        await ctx.durable.finish()

    def seal() -> None:
        for i in done:  # what an earlier attempt put came from the same overlay: its sums, to check the read-back
            assert view is not None
            sums[i] = sha256_b64(view.read(i * EBS_BLOCK_SIZE, EBS_BLOCK_SIZE).ljust(EBS_BLOCK_SIZE, b"\0"))
        target.flush()

    stop, finished = threading.Event(), TransferProgress(total, total, ranges())
    # Reads and a round trip that move no new bytes: off the event loop (which heartbeats every activity
    # of the worker), and heartbeating, as a loaded host can take longer than a heartbeat timeout over them.
    await beating(lambda: ctx.progress(finished), in_thread(seal))
    # Completing a snapshot can take minutes: heartbeat meanwhile, and let a cancel stop the wait.
    await beating(lambda: ctx.progress(finished), in_thread(_finish, clients, target, sums,
                                                        bool(env.get("verify_upload", True)), stop),
                  on_cancel=stop.set)
    # ``_finish`` raises on any block that reads back otherwise: said as ``import_disk`` says it
    checked = ", read back and compared with the overlay: identical" if env.get("verify_upload", True) and indexes \
        else ""
    ctx.event(f"disk {disk.disk_id}: snapshot {sid} complete ({len(target.written)} blocks written now, {len(done)} "
              f"from the checkpoint; {len(indexes)} block(s) over replica snapshot {parent}{checked})")
    return ImportedDisk(disk_id=disk.disk_id, details={
        "snapshot_id": sid, "volume_size_gib": gib, "parent_snapshot_id": parent, "blocks_written": len(target.written),
        "blocks_from_checkpoint": len(done)})
