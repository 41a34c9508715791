"""Replica disks of transfers to AWS: chains of EBS snapshots.

The first execution writes the source's non-zero blocks into a new snapshot; each later one starts
a child with ``ParentSnapshotId`` = the last good snapshot and writes only the blocks that differ
(zeros included, where the parent held data). AWS makes a child snapshot read as the whole disk;
snapshots are tagged ``sterna:role=replica`` with the transfer id, so that ``delete-disks`` finds them.

A snapshot being written is tagged with its execution too: a retry of that execution after a killed
worker resumes into it (``pending``) where its checkpoint says, instead of starting a new one.
"""

from __future__ import annotations

from typing import Any

from core.errors import NotFound
from providers.aws import tags as t
from providers.aws.ebs import EBS_BLOCK_SIZE, EbsSnapshotTarget, volume_size_gib
from providers.aws.errors import aws_errors, error_code
from providers.aws.session import AwsClients

ROLE_REPLICA = "replica"


class ChildSnapshotTarget(EbsSnapshotTarget):
    """An EBS snapshot being written as a child: an all-zero block must be written, not skipped,
    since the parent's block would show through otherwise.

    ``flush`` completes it and tags it ``done_state`` with the number of blocks written
    (``tags.BLOCKS_TAG``, read by ``providers.aws.chain``)."""

    def __init__(self, clients: AwsClients, snapshot_id: str, size: int, *, has_parent: bool,
                 done_state: str = t.UPLOAD_COMPLETE) -> None:
        super().__init__(clients.ebs, snapshot_id, size, secrets=clients.conn.secrets)
        self.clients, self.has_parent, self.done_state = clients, has_parent, done_state

    def flush(self) -> None:
        super().flush()
        done = {t.UPLOAD_TAG: self.done_state, t.BLOCKS_TAG: str(self.changed_blocks_count)}
        with aws_errors(f"tagging snapshot {self.snapshot_id}", self.clients.conn.secrets):
            self.clients.ec2.create_tags(Resources=[self.snapshot_id], Tags=t.tag_list(done))

    def write(self, offset: int, data: bytes) -> None:
        if not self.has_parent:
            super().write(offset, data)
            return
        for start in range(0, len(data), EBS_BLOCK_SIZE):
            block = data[start:start + EBS_BLOCK_SIZE]
            self._put((offset + start) // EBS_BLOCK_SIZE, block + bytes(EBS_BLOCK_SIZE - len(block)))

    def write_zeroes(self, offset: int, length: int) -> None:
        if self.has_parent:
            self.write(offset, bytes(length))


def start(clients: AwsClients, transfer_id: str, instance: str, disk_id: str, size_bytes: int,
          parent: str | None, execution_id: str | None = None) -> tuple[str, ChildSnapshotTarget]:
    # Children an interrupted execution left unfinished (a killed worker): never part of the chain.
    # This instance's only: another instance of the transfer may be writing its own disk of that id now.
    keys = {t.MIGRATION_TAG: transfer_id, t.ROLE_TAG: ROLE_REPLICA, t.SOURCE_INSTANCE_TAG: instance,
            t.DISK_TAG: disk_id, t.UPLOAD_TAG: t.UPLOAD_IN_PROGRESS}
    with aws_errors("listing unfinished replica snapshots", clients.conn.secrets):
        stale = clients.ec2.describe_snapshots(OwnerIds=["self"], Filters=t.filters(keys))["Snapshots"]
    for snap in stale:
        discard(clients, str(snap["SnapshotId"]))
    tags = {"Name": f"sterna replica {instance} {disk_id}", t.MIGRATION_TAG: transfer_id, t.DISK_TAG: disk_id,
            t.ROLE_TAG: ROLE_REPLICA, t.SOURCE_INSTANCE_TAG: instance, t.UPLOAD_TAG: t.UPLOAD_IN_PROGRESS,
            t.EXECUTION_TAG: execution_id}
    kwargs: dict[str, Any] = {"VolumeSize": volume_size_gib(size_bytes), "Tags": t.tag_list(tags),
                              "Description": f"Sterna replica of disk {disk_id} of {instance}"[:255], "Timeout": 60}
    if parent:
        kwargs["ParentSnapshotId"] = parent
        kwargs["Tags"] = t.tag_list({**tags, t.PARENT_TAG: parent})
    with aws_errors(f"starting a replica snapshot of disk {disk_id}", clients.conn.secrets):
        snapshot_id = str(clients.ebs.start_snapshot(**kwargs)["SnapshotId"])
    return snapshot_id, ChildSnapshotTarget(clients, snapshot_id, size_bytes, has_parent=bool(parent))


def pending(clients: AwsClients, transfer_id: str, instance: str, disk_id: str, size_bytes: int,
            parent: str | None, execution_id: str) -> tuple[str, ChildSnapshotTarget] | None:
    """The newest snapshot of this disk that ``execution_id`` started over ``parent`` and never
    completed (its worker was killed), and a target writing more into it; None if there is none.
    The others of the kind are discarded: no attempt will write them again."""
    keys = {t.MIGRATION_TAG: transfer_id, t.ROLE_TAG: ROLE_REPLICA, t.SOURCE_INSTANCE_TAG: instance,
            t.DISK_TAG: disk_id, t.UPLOAD_TAG: t.UPLOAD_IN_PROGRESS, t.EXECUTION_TAG: execution_id}
    with aws_errors("listing unfinished replica snapshots", clients.conn.secrets):
        found = clients.ec2.describe_snapshots(OwnerIds=["self"], Filters=t.filters(keys))["Snapshots"]
    # A pending snapshot that no block reached within StartSnapshot's Timeout is in "error": gone for writes.
    usable = sorted((s for s in found if t.as_dict(s.get("Tags")).get(t.PARENT_TAG) == parent
                     and s.get("State") != "error"), key=lambda s: s["StartTime"])
    chosen = usable[-1] if usable else None
    for snap in found:
        if snap is not chosen:
            discard(clients, str(snap["SnapshotId"]))
    if chosen is None:
        return None
    sid = str(chosen["SnapshotId"])
    return sid, ChildSnapshotTarget(clients, sid, size_bytes, has_parent=bool(parent))


def discard(clients: AwsClients, snapshot_id: str) -> None:
    try:
        with aws_errors(f"deleting replica snapshot {snapshot_id}", clients.conn.secrets):
            try:
                clients.ec2.delete_snapshot(SnapshotId=snapshot_id)
            except Exception as exc:
                if error_code(exc) != "InvalidSnapshot.NotFound":
                    raise
    except NotFound:
        return


def delete_all(clients: AwsClients, transfer_id: str) -> list[str]:
    keys = {t.MIGRATION_TAG: transfer_id, t.ROLE_TAG: ROLE_REPLICA}
    with aws_errors("listing replica snapshots", clients.conn.secrets):
        found = clients.ec2.describe_snapshots(OwnerIds=["self"], Filters=t.filters(keys))["Snapshots"]
    for snap in found:
        discard(clients, str(snap["SnapshotId"]))
    return [f"Removed replica snapshot {s['SnapshotId']}" for s in found]

