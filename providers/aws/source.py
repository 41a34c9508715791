"""Source side: snapshot an instance's EBS volumes and read them with the EBS direct APIs.

An AMI (a template) needs no new snapshot: its block-device mappings already are
snapshots, which are read in place and never deleted. Snapshots taken here are tagged
with the migration id and the volume id, and their ids are kept in the workdir, so a
repeated ``snapshot_instance`` returns the same set instead of taking another.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from core.errors import NotFound
from core.models import DiskLocator, SourceSnapshot
from diskio.base import Extent
from providers.aws import tags as t
from providers.aws.ebs import EBS_BLOCK_SIZE, EbsSnapshotSource
from providers.aws.errors import aws_errors, error_code
from providers.aws.instances import describe_image_raw, describe_instance_raw, image_info, instance_info
from providers.aws.session import AwsClients
from providers.base import ActionContext

STATE_FILE = "aws-source-snapshot.json"


def shutdown_instance(clients: AwsClients, instance: str) -> None:
    """Stop the instance and wait until it is stopped (no-op for AMIs and stopped instances)."""
    if instance.startswith("ami-"):
        return
    raw = describe_instance_raw(clients.ec2, instance, clients.conn.secrets)
    if raw["State"]["Name"] == "stopped":
        return
    with aws_errors(f"stopping instance {raw['InstanceId']}", clients.conn.secrets):
        clients.ec2.stop_instances(InstanceIds=[raw["InstanceId"]])
        clients.wait("instance_stopped", delay=5, timeout=600, InstanceIds=[raw["InstanceId"]])


def _still_there(clients: AwsClients, snapshot: SourceSnapshot) -> bool:
    ids = [d.details["snapshot_id"] for d in snapshot.disks]
    try:
        with aws_errors("checking earlier snapshots", clients.conn.secrets):
            found = clients.ec2.describe_snapshots(SnapshotIds=ids)["Snapshots"]
    except NotFound:
        return False
    return len(found) == len(ids) and all(s["State"] != "error" for s in found)


def snapshot_instance(
    clients: AwsClients, instance: str, workdir: Path, action: ActionContext
) -> SourceSnapshot:
    """Snapshot every EBS volume of ``instance`` (or reuse an AMI's snapshots); idempotent per workdir."""
    state = Path(workdir) / STATE_FILE
    if state.exists():
        earlier = SourceSnapshot.model_validate_json(state.read_text())
        if earlier.instance == instance and _still_there(clients, earlier):
            return earlier
    ec2, secrets = clients.ec2, clients.conn.secrets
    if instance.startswith("ami-") or (not instance.startswith("i-") and _is_image(clients, instance)):
        image = describe_image_raw(ec2, instance, secrets)
        info = image_info(image)
        disks = [
            DiskLocator(
                disk_id=d.id,
                size_bytes=d.size_bytes,
                details={"snapshot_id": d.id, "owned": False, "region": clients.region},
            )
            for d in info.devices.disks
        ]
        snap = SourceSnapshot(
            instance=instance,
            snapshot_id=image["ImageId"],
            disks=disks,
            details={"image": True, "region": clients.region},
        )
    else:
        raw = describe_instance_raw(ec2, instance, secrets)
        info = instance_info(ec2, raw, None, secrets)
        tracking = bool(action.change_tracking)
        migration = action.action_id or action.change_tracking
        disks = []
        for disk in info.devices.disks:
            # A transfer's retries find their snapshot through the workdir's state file; finding it
            # by tag could pick an older execution's snapshot that a force-cancel left unreleased.
            snapshot_id = _snapshot_volume(clients, migration, raw["InstanceId"], disk.id, reuse=not tracking)
            disks.append(
                DiskLocator(
                    disk_id=disk.id,
                    size_bytes=disk.size_bytes,
                    details={"snapshot_id": snapshot_id, "owned": True, "region": clients.region,
                             # A transfer keeps it, as the baseline of the next execution's changed blocks.
                             **({"keep": True, "change_marker": snapshot_id} if tracking else {})},
                )
            )
        with aws_errors("waiting for the source snapshots", secrets):
            clients.wait_snapshots([d.details["snapshot_id"] for d in disks], delay=10, timeout=10800,
                                   stop=action.stop)
        snap = SourceSnapshot(
            instance=instance,
            snapshot_id=",".join(d.details["snapshot_id"] for d in disks),
            disks=disks,
            details={"instance_id": raw["InstanceId"], "image": False, "region": clients.region},
        )
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(snap.model_dump()))
    return snap


def _is_image(clients: AwsClients, name: str) -> bool:
    try:
        describe_image_raw(clients.ec2, name, clients.conn.secrets)
    except NotFound:
        return False
    try:
        describe_instance_raw(clients.ec2, name, clients.conn.secrets)
    except NotFound:
        return True
    return False


def _snapshot_volume(clients: AwsClients, migration: str | None, instance_id: str, volume_id: str, *,
                     reuse: bool = True) -> str:
    ec2, secrets = clients.ec2, clients.conn.secrets
    keys = {t.MIGRATION_TAG: migration, t.ROLE_TAG: t.ROLE_SOURCE_SNAPSHOT, t.DISK_TAG: volume_id}
    if migration and reuse:
        # An earlier attempt of the same migration may have lost its workdir but left the snapshot.
        with aws_errors(f"looking for a snapshot of {volume_id}", secrets):
            found = ec2.describe_snapshots(OwnerIds=["self"], Filters=t.filters(keys))["Snapshots"]  # type: ignore[arg-type]
        live = [s for s in found if s["State"] != "error"]
        if live:
            return str(live[0]["SnapshotId"])
    tags = {"Name": f"sterna source {volume_id}", t.SOURCE_INSTANCE_TAG: instance_id, **keys}
    with aws_errors(f"snapshotting volume {volume_id}", secrets):
        resp = ec2.create_snapshot(
            VolumeId=volume_id,
            Description=f"Sterna source snapshot of {volume_id} ({instance_id})",
            TagSpecifications=t.tag_specs(["snapshot"], tags),
        )
    return str(resp["SnapshotId"])


def _keep_only(clients: AwsClients, snapshot_id: str) -> None:
    """``snapshot_id`` becomes its volume's one kept baseline: earlier ones of the transfer go.

    Whether this execution succeeded or not, the older baseline is no use any more: a failed
    execution leaves its replica untrusted, and the next one re-syncs it in full.
    """
    with aws_errors(f"keeping snapshot {snapshot_id}", clients.conn.secrets):
        snap = clients.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
        tags = t.as_dict(snap.get("Tags"))
        clients.ec2.create_tags(Resources=[snapshot_id], Tags=[{"Key": t.ROLE_TAG, "Value": t.ROLE_CHANGE_MARKER}])
        keys = {t.MIGRATION_TAG: tags.get(t.MIGRATION_TAG, ""), t.ROLE_TAG: t.ROLE_CHANGE_MARKER,
                t.DISK_TAG: tags.get(t.DISK_TAG, "")}
        found = clients.ec2.describe_snapshots(OwnerIds=["self"], Filters=t.filters(keys))["Snapshots"]
    for old in found:
        if old["SnapshotId"] != snapshot_id:
            _delete(clients, str(old["SnapshotId"]))


def changed_extents(clients: AwsClients, disk: DiskLocator, marker: str) -> list[Extent] | None:
    """EBS ListChangedBlocks between the marker snapshot and this one; ``None`` if the marker is gone."""
    try:
        with aws_errors(f"looking for snapshot {marker}", clients.conn.secrets):
            clients.ec2.describe_snapshots(SnapshotIds=[marker])
    except NotFound:
        return None  # deleted by hand: the next execution compares every block's digest
    out: list[Extent] = []
    kwargs: dict[str, Any] = {"FirstSnapshotId": marker, "SecondSnapshotId": disk.details["snapshot_id"]}
    while True:
        try:
            with aws_errors(f"listing blocks changed since {marker}", clients.conn.secrets):
                page = clients.ebs.list_changed_blocks(**kwargs)
        except NotFound:
            return None
        size = int(page.get("BlockSize") or EBS_BLOCK_SIZE)
        for block in page.get("ChangedBlocks", []):
            start = int(block["BlockIndex"]) * size
            if out and out[-1].end == start:
                out[-1] = Extent(out[-1].offset, out[-1].length + size)
            else:
                out.append(Extent(start, min(size, disk.size_bytes - start)))
        if not page.get("NextToken"):
            return sorted(out)
        kwargs["NextToken"] = page["NextToken"]


def open_disk(clients: AwsClients, disk: DiskLocator) -> EbsSnapshotSource:
    """A ``DiskSource`` over the disk's snapshot."""
    return EbsSnapshotSource(clients.ebs, disk.details["snapshot_id"], disk.size_bytes, clients.conn.secrets)


def delete_snapshot(clients: AwsClients, snapshot: SourceSnapshot) -> None:
    """Delete the snapshots ``snapshot_instance`` took (never an AMI's); tolerates repeats."""
    for disk in snapshot.disks:
        if not disk.details.get("owned"):
            continue
        if disk.details.get("keep"):
            # Kept as the next execution's baseline; retagged so that no later snapshot_instance
            # mistakes it for a snapshot of its own to reuse.
            with contextlib.suppress(NotFound):  # a repeated release, after a newer one pruned it
                _keep_only(clients, disk.details["snapshot_id"])
            continue
        _delete(clients, disk.details["snapshot_id"])


def _delete(clients: AwsClients, snapshot_id: str) -> None:
    try:
        with aws_errors(f"deleting snapshot {snapshot_id}", clients.conn.secrets):
            try:
                clients.ec2.delete_snapshot(SnapshotId=snapshot_id)
            except Exception as exc:
                if error_code(exc) not in ("InvalidSnapshot.NotFound",):
                    raise
    except NotFound:
        return


def release_tracking(clients: AwsClients, transfer: str) -> list[str]:
    """Delete the baseline snapshots a transfer kept (its replica is gone)."""
    keys = {t.MIGRATION_TAG: transfer, t.ROLE_TAG: t.ROLE_CHANGE_MARKER}
    with aws_errors("listing baseline snapshots", clients.conn.secrets):
        found = clients.ec2.describe_snapshots(OwnerIds=["self"], Filters=t.filters(keys))["Snapshots"]
    for snap in found:
        _delete(clients, str(snap["SnapshotId"]))
    return [f"Removed baseline snapshot {s['SnapshotId']}" for s in found]
