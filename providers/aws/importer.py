"""Destination data path: one converted raw disk into one EBS snapshot (EBS direct APIs).

The snapshot is tagged with the migration id, the disk id and an upload state. A retried
activity finds its pending snapshot by those tags and resumes into it from the
checkpoint; an upload already marked complete is returned as is. A snapshot that AWS
failed (``error`` state, e.g. after its ``Timeout``) is deleted and the upload restarts,
because the checkpoint describes blocks of that lost snapshot.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from core.errors import InvalidInput
from core.models import DiskLocator, ImportedDisk, InstanceInfo
from providers.aws import tags as t
from providers.aws.ebs import EBS_BLOCK_SIZE, GIB, EbsSnapshotTarget, volume_size_gib
from providers.aws.errors import aws_errors
from providers.aws.session import AwsClients
from providers.aws.transfer import LocalRawSource, copy_blocks, count_nonzero_blocks
from providers.base import TransferContext

DEFAULT_SNAPSHOT_TIMEOUT_MIN = 240


def find_import_snapshot(clients: AwsClients, migration: str | None, disk_id: str) -> dict[str, Any] | None:
    """The newest non-failed import snapshot for this migration and disk, if any."""
    if not migration:
        return None
    secrets = clients.conn.secrets
    with aws_errors(f"looking for the upload snapshot of disk {disk_id}", secrets):
        found = clients.ec2.describe_snapshots(
            OwnerIds=["self"],
            Filters=t.filters(
                {t.MIGRATION_TAG: migration, t.DISK_TAG: disk_id, t.ROLE_TAG: t.ROLE_IMPORT_SNAPSHOT}
            ),
        )["Snapshots"]
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
) -> ImportedDisk:
    """Upload ``disk.path`` (raw) into a completed EBS snapshot; see the module docstring."""
    local_size = await asyncio.to_thread(_local_size, disk)
    if disk.format != "raw":
        raise InvalidInput(f"disk {disk.disk_id} is {disk.format}, the AWS destination needs raw")
    secrets = clients.conn.secrets
    migration = t.migration_id(env)
    size = max(disk.size_bytes, local_size)
    gib = volume_size_gib(size)

    existing = await asyncio.to_thread(find_import_snapshot, clients, migration, disk.disk_id)
    if existing and t.as_dict(existing.get("Tags")).get(t.UPLOAD_TAG) == t.UPLOAD_COMPLETE:
        ctx.event(f"disk {disk.disk_id}: snapshot {existing['SnapshotId']} was already uploaded")
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
            migration=migration,
        )

    # Swap point for diskio: open_local_source(disk.path) / copy_disk(...) replace the two calls below.
    source = LocalRawSource(str(disk.path))
    try:
        previously = await asyncio.to_thread(count_nonzero_blocks, source, checkpoint, EBS_BLOCK_SIZE)
        target = EbsSnapshotTarget(
            clients.ebs, snapshot_id, gib * GIB, previously_written=previously, secrets=secrets
        )
        ctx.event(
            f"disk {disk.disk_id}: uploading to EBS snapshot {snapshot_id}"
            + (f", resuming after {previously} blocks already written" if checkpoint else "")
        )
        stats = await copy_blocks(
            source,
            target,
            checkpoint=checkpoint,
            on_progress=ctx.progress,
            bandwidth_limit=ctx.bandwidth_limit,
        )
    finally:
        source.close()
    await asyncio.to_thread(target.flush)
    await asyncio.to_thread(_finish, clients, snapshot_id)
    ctx.event(
        f"disk {disk.disk_id}: snapshot {snapshot_id} complete ({len(target.written)} blocks written now, "
        f"{stats.blocks_from_checkpoint} from the checkpoint, {stats.blocks_zero} zero blocks skipped)"
    )
    return _imported(
        disk,
        snapshot_id,
        gib,
        blocks_written=len(target.written),
        blocks_from_checkpoint=stats.blocks_from_checkpoint,
        blocks_zero=stats.blocks_zero,
        changed_blocks_count=target.changed_blocks_count,
    )


def _start_snapshot(
    clients: AwsClients,
    *,
    env: Mapping[str, Any],
    export_info: InstanceInfo,
    disk: DiskLocator,
    gib: int,
    migration: str | None,
) -> str:
    tags = {
        "Name": f"sterna {export_info.name} {disk.disk_id}",
        t.MIGRATION_TAG: migration,
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


def _finish(clients: AwsClients, snapshot_id: str) -> None:
    """Mark the upload complete (tag) and wait until EC2 shows the snapshot completed."""
    secrets = clients.conn.secrets
    with aws_errors(f"tagging snapshot {snapshot_id}", secrets):
        clients.ec2.create_tags(Resources=[snapshot_id], Tags=t.tag_list({t.UPLOAD_TAG: t.UPLOAD_COMPLETE}))
    with aws_errors(f"waiting for snapshot {snapshot_id} to complete", secrets):
        clients.wait("snapshot_completed", delay=5, timeout=3600, SnapshotIds=[snapshot_id])
