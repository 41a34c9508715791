"""Destination data path: one converted raw disk into one EBS snapshot (EBS direct APIs).

The bytes move through the disk engine (``diskio.copy_disk``): allocated extents only, zero
blocks skipped, chunks hashed, a checkpoint heartbeated. Once AWS has completed the snapshot it
is read back and compared with the local disk (``verify_upload``, on by default).

The snapshot is tagged with the migration id, the disk id and an upload state. A retried
activity finds its pending snapshot by those tags and resumes into it from the
checkpoint; an upload already marked complete is returned as is. A snapshot that AWS
failed (``error`` state, e.g. after its ``Timeout``) is deleted and the upload restarts,
because the checkpoint describes blocks of that lost snapshot.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from core.errors import IntegrityError, InvalidInput
from core.models import DiskLocator, ImportedDisk, InstanceInfo
from diskio.base import DiskSource
from diskio.copier import CopyResult, copy_disk
from diskio.keepalive import beating
from diskio.keepalive import in_thread as _in_thread
from diskio.local import open_local_source
from diskio.plan import align_extents
from diskio.ranges import covers, merge
from diskio.verify import compare_digests
from providers.aws import tags as t
from providers.aws.ebs import EBS_BLOCK_SIZE, GIB, EbsSnapshotTarget, volume_size_gib
from providers.aws.errors import aws_errors
from providers.aws.session import AwsClients
from providers.base import ActionContext, TransferContext, TransferProgress

T = TypeVar("T")
#: seconds between heartbeats while no bytes move (well inside any heartbeat timeout)
HEARTBEAT_EVERY = 2.0

DEFAULT_SNAPSHOT_TIMEOUT_MIN = 240
#: 4 blocks a chunk: the unit of checkpoint and hash. Small enough that a resumed upload redoes
#: little, large enough that the checkpoint stays short.
EBS_CHUNK_SIZE = 4 * EBS_BLOCK_SIZE
#: concurrent chunks: each PutSnapshotBlock is a round trip, so lanes hide latency
EBS_LANES = 8


def find_import_snapshot(
    clients: AwsClients, migration: str | None, instance: str, disk_id: str
) -> dict[str, Any] | None:
    """The newest non-failed import snapshot for this migration, instance and disk, if any.

    Keyed by the instance too: the instances of one migration often share disk ids (``disk-0``),
    and one of them must never resume into, or reuse, another's snapshot.
    """
    if not migration:
        return None
    secrets = clients.conn.secrets
    keys = {t.MIGRATION_TAG: migration, t.SOURCE_INSTANCE_TAG: instance, t.DISK_TAG: disk_id,
            t.ROLE_TAG: t.ROLE_IMPORT_SNAPSHOT}
    with aws_errors(f"looking for the upload snapshot of disk {disk_id} of {instance}", secrets):
        found = clients.ec2.describe_snapshots(OwnerIds=["self"], Filters=t.filters(keys))["Snapshots"]
    for snap in sorted(found, key=lambda s: s["StartTime"], reverse=True):
        if snap["State"] == "error":
            with aws_errors(f"deleting failed snapshot {snap['SnapshotId']}", secrets):
                clients.ec2.delete_snapshot(SnapshotId=snap["SnapshotId"])
            continue
        return dict(snap)
    return None


def _local_size(disk: DiskLocator) -> int:
    if not disk.path or not os.path.isfile(disk.path):
        raise InvalidInput(f"disk {disk.disk_id} has no local raw image to upload (path {disk.path!r})")
    return os.path.getsize(disk.path)


def _imported(disk: DiskLocator, snapshot_id: str, gib: int, **extra: Any) -> ImportedDisk:
    return ImportedDisk(
        disk_id=disk.disk_id, details={"snapshot_id": snapshot_id, "volume_size_gib": gib, **extra}
    )


async def import_disk(
    clients: AwsClients,
    env: Mapping[str, Any],
    export_info: InstanceInfo,
    disk: DiskLocator,
    ctx: TransferContext,
    action: ActionContext,
) -> ImportedDisk:
    """Upload ``disk.path`` (raw) into a completed EBS snapshot; see the module docstring."""
    local_size = await asyncio.to_thread(_local_size, disk)
    if disk.format != "raw":
        raise InvalidInput(f"disk {disk.disk_id} is {disk.format}, the AWS destination needs raw")
    secrets = clients.conn.secrets
    migration = action.action_id
    size = max(disk.size_bytes, local_size)
    gib = volume_size_gib(size)

    existing = await asyncio.to_thread(find_import_snapshot, clients, migration, export_info.name, disk.disk_id)
    state = t.as_dict(existing.get("Tags")).get(t.UPLOAD_TAG) if existing else None
    if existing and state == t.UPLOAD_COMPLETE:
        await ctx.aevent(f"disk {disk.disk_id}: snapshot {existing['SnapshotId']} was already uploaded")
        return _imported(disk, existing["SnapshotId"], int(existing["VolumeSize"]), reused=True)

    checkpoint = [(int(r[0]), int(r[1])) for r in ctx.checkpoint or []] if existing else []
    if existing:
        snapshot_id = existing["SnapshotId"]
        gib = int(existing["VolumeSize"])
    else:
        snapshot_id = await asyncio.to_thread(
            _start_snapshot,
            clients,
            env=env,
            export_info=export_info,
            disk=disk,
            gib=gib,
            action=action,
        )

    source = open_local_source(str(disk.path))
    try:
        allocated = sum(e.length for e in await asyncio.to_thread(source.extents))
        done_before = sum(length for _off, length in merge(checkpoint))
        resumed = TransferProgress(min(done_before, allocated), allocated, checkpoint)
        previously = await _beating(ctx, resumed, _in_thread(count_nonzero_blocks, source, checkpoint))
        target = EbsSnapshotTarget(
            clients.ebs, snapshot_id, gib * GIB, previously_written=previously, secrets=secrets
        )
        await ctx.aevent(
            f"disk {disk.disk_id}: uploading to EBS snapshot {snapshot_id}"
            + (f", resuming after {previously} blocks already written" if checkpoint else "")
        )
        # The copier's flush is CompleteSnapshot; its read-back verification cannot run while the
        # snapshot is pending, so the whole-disk check comes after completion, below.
        if state == t.UPLOAD_WRITTEN:
            # An earlier attempt completed the snapshot and stopped before checking it.
            target.completed = True
            result = CopyResult()
        else:
            result = await copy_disk(
                source,
                target,
                checkpoint=checkpoint,
                on_progress=ctx.progress,
                bandwidth_limit=ctx.bandwidth_limit,
                chunk_size=EBS_CHUNK_SIZE,
                lanes=EBS_LANES,
                durable=ctx.durable,
            )
            await asyncio.to_thread(_tag_upload, clients, snapshot_id, t.UPLOAD_WRITTEN)
        # Waiting for AWS and reading the snapshot back take minutes on a large disk: the activity
        # keeps heartbeating (and so stays cancellable) with the upload's final checkpoint.
        uploaded = TransferProgress(allocated, allocated, [(0, source.size)])
        stop = threading.Event()
        await _beating(ctx, uploaded, _in_thread(wait_completed, clients, snapshot_id, stop), on_cancel=stop.set)
        verified = ""
        if env.get("verify_upload", True):
            try:
                verified = await _beating(ctx, uploaded, verify_snapshot(source, target, disk.disk_id))
            except IntegrityError:
                # A completed snapshot takes no more writes: drop it, so that the retry starts a new one.
                await asyncio.to_thread(_delete_snapshot, clients, snapshot_id)
                raise
            await ctx.aevent(verified)
    finally:
        source.close()
    await asyncio.to_thread(_tag_upload, clients, snapshot_id, t.UPLOAD_COMPLETE)
    from_checkpoint = previously if checkpoint else 0
    await ctx.aevent(
        f"disk {disk.disk_id}: snapshot {snapshot_id} complete ({len(target.written)} blocks written now, "
        f"{from_checkpoint} from the checkpoint, {target.zero_skipped} zero blocks skipped; "
        f"{result.bytes_read:,} bytes read, {result.chunks_resumed} of {result.chunks_total} chunks resumed)"
    )
    return _imported(
        disk,
        snapshot_id,
        gib,
        blocks_written=len(target.written),
        blocks_from_checkpoint=from_checkpoint,
        blocks_zero=target.zero_skipped,
        changed_blocks_count=target.changed_blocks_count,
        chunks_resumed=result.chunks_resumed,
        verified=bool(verified),
    )


async def _beating(ctx: TransferContext, progress: TransferProgress, work: Awaitable[T],
                   on_cancel: Callable[[], None] | None = None) -> T:
    """Await ``work`` while heartbeating ``progress`` every ``HEARTBEAT_EVERY`` seconds; a cancel stops the wait
    (``on_cancel`` tells a thread to stop early)."""
    return await beating(lambda: ctx.progress(progress), work, every=HEARTBEAT_EVERY, on_cancel=on_cancel)


async def verify_snapshot(source: DiskSource, target: EbsSnapshotTarget, disk_id: str) -> str:
    """Read the completed snapshot back and compare it, chunk by chunk, with the local disk.

    AWS already checks each block's SHA-256 on PutSnapshotBlock; this also catches a block
    that was never sent or sent to the wrong index. On a mismatch the snapshot is unusable
    (a completed snapshot takes no more writes): ``import_disk`` deletes it, and the error is
    retryable, so the retry uploads into a new snapshot.
    """
    check = await compare_digests(source, target, chunk_size=EBS_CHUNK_SIZE, lanes=EBS_LANES)
    if not check.ok:
        spans = ", ".join(f"{off}+{length}" for off, length in check.mismatched[:5])
        raise IntegrityError(
            f"disk {disk_id}: snapshot {target.snapshot_id} read back differs from the converted disk "
            f"in {len(check.mismatched)} chunk(s): {spans}"
        )
    return (
        f"disk {disk_id}: snapshot {target.snapshot_id} read back and compared with the converted disk: "
        f"identical (per-disk digest {check.target_digest})"
    )


def count_nonzero_blocks(src: DiskSource, ranges: list[tuple[int, int]]) -> int:
    """Non-zero 512 KiB blocks of ``src`` inside done ``(offset, length)`` ranges: what an
    earlier attempt wrote. CompleteSnapshot needs the count over the snapshot's whole life,
    and a pending snapshot cannot be listed, so it is recounted from the local disk."""
    done = merge(ranges)
    if not done:
        return 0
    count = 0
    for off, length in align_extents(src.extents(), src.size, EBS_BLOCK_SIZE):
        for start in range(off, off + length, EBS_BLOCK_SIZE):
            n = min(EBS_BLOCK_SIZE, src.size - start)
            if covers(done, start, n):
                data = src.read(start, n)
                if data.count(0) != len(data):
                    count += 1
    return count


def _start_snapshot(
    clients: AwsClients,
    *,
    env: Mapping[str, Any],
    export_info: InstanceInfo,
    disk: DiskLocator,
    gib: int,
    action: ActionContext,
) -> str:
    tags = {
        "Name": f"sterna {export_info.name} {disk.disk_id}",
        **t.action_tags(action),
        t.DISK_TAG: disk.disk_id,
        t.ROLE_TAG: t.ROLE_IMPORT_SNAPSHOT,
        t.SOURCE_INSTANCE_TAG: export_info.name,
        t.UPLOAD_TAG: t.UPLOAD_IN_PROGRESS,
    }
    timeout = int(env.get("snapshot_timeout_minutes") or DEFAULT_SNAPSHOT_TIMEOUT_MIN)
    with aws_errors(f"starting an EBS snapshot for disk {disk.disk_id}", clients.conn.secrets):
        resp = clients.ebs.start_snapshot(
            VolumeSize=gib,
            Tags=t.tag_list(tags),
            Description=f"Sterna import of disk {disk.disk_id} of {export_info.name}"[:255],
            Timeout=max(10, min(timeout, 4320)),
        )
    return str(resp["SnapshotId"])


def wait_completed(clients: AwsClients, snapshot_id: str, stop: threading.Event | None = None) -> None:
    with aws_errors(f"waiting for snapshot {snapshot_id} to complete", clients.conn.secrets):
        clients.wait_snapshots([snapshot_id], delay=5, timeout=3600, stop=stop)


def _delete_snapshot(clients: AwsClients, snapshot_id: str) -> None:
    with aws_errors(f"deleting snapshot {snapshot_id}", clients.conn.secrets):
        clients.ec2.delete_snapshot(SnapshotId=snapshot_id)


def _tag_upload(clients: AwsClients, snapshot_id: str, state: str) -> None:
    """Record the upload's state on the snapshot: ``written`` once AWS accepted CompleteSnapshot,
    ``complete`` once it was also read back and compared; a retried activity goes on from there."""
    with aws_errors(f"tagging snapshot {snapshot_id}", clients.conn.secrets):
        clients.ec2.create_tags(Resources=[snapshot_id], Tags=t.tag_list({t.UPLOAD_TAG: state}))
