"""Destination data path: a local raw disk into an EBS snapshot through the EBS direct APIs.

moto stores the blocks it is given and serves them back, which is what these tests read.
Real AWS differs in ways moto can't show: it rejects a PutSnapshotBlock whose SHA-256
doesn't match (moto accepts any checksum and echoes it back), it reports BlockSize
524288 (moto: 512), it paginates ListSnapshotBlocks, and it checks CompleteSnapshot's
ChangedBlocksCount. Here we check the checksums we *sent* by reading them back.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.errors import IntegrityError, InvalidInput
from core.models import DiskLocator
from diskio.local import open_local_source
from providers.aws import importer
from providers.aws.ebs import GIB, EbsSnapshotSource, EbsSnapshotTarget, sha256_b64
from providers.aws.importer import verify_snapshot
from providers.aws.provider import AwsProvider
from providers.base import ActionContext
from tests.providers.aws.awshelpers import Ctx, export_info, local_bytes, make_disk, pattern, read_snapshot

BLOCK = 512 * 1024


@pytest.fixture
def disk(tmp_path: Path) -> DiskLocator:
    # 3 MiB + 300 KiB: data at block 0 (partial), an allocated all-zero block 1, data in
    # block 2 (full) and block 4, a hole at block 3, and data in the unaligned tail block 6.
    size = 6 * BLOCK + 300 * 1024
    path = make_disk(
        tmp_path / "disk0.raw",
        size,
        {
            4096: pattern(1, 10_000),
            BLOCK: bytes(BLOCK),
            2 * BLOCK: pattern(2, BLOCK),
            4 * BLOCK + 7: pattern(4, 1000),
            6 * BLOCK + 100: pattern(6, 200 * 1024),
        },
    )
    return DiskLocator(disk_id="disk-0", size_bytes=size, path=str(path))


async def test_blocks_read_back_equal_the_imported_disk(
    provider: AwsProvider, ebs: Any, ec2: Any, disk: DiskLocator, tmp_path: Path
) -> None:
    env: dict[str, Any] = {}
    action = ActionContext(action_id="mig-import-1")
    ctx = Ctx(tmp_path)
    imported = await provider.import_disk(env, export_info([disk]), disk, ctx.ctx, action)
    snapshot_id = imported.details["snapshot_id"]
    local = local_bytes(disk)

    # Byte for byte, through ListSnapshotBlocks + GetSnapshotBlock.
    assert read_snapshot(ebs, snapshot_id, disk.size_bytes) == local
    # Only the non-zero 512 KiB blocks were written: not the zero block 1, not the hole 3/5.
    listed = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)["Blocks"]
    assert sorted(b["BlockIndex"] for b in listed) == [0, 2, 4, 6]
    assert imported.details["blocks_written"] == 4
    assert imported.details["changed_blocks_count"] == 4
    # The checksum sent with each block is the SHA-256 of that block. (moto only echoes it
    # back; real AWS would have refused the PutSnapshotBlock on a mismatch.)
    for b in listed:
        got = ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"]
        )
        data = got["BlockData"].read()
        assert got["ChecksumAlgorithm"] == "SHA256"
        assert got["Checksum"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    # Tagged for cleanup-by-tag, sized in whole GiB, and marked complete.
    snap = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]
    tags = {t["Key"]: t["Value"] for t in snap["Tags"]}
    assert tags["sterna:migration-id"] == "mig-import-1"
    assert tags["sterna:disk-id"] == "disk-0"
    assert tags["sterna:upload"] == "complete"
    assert snap["VolumeSize"] == 1
    # Progress reached the total, and its checkpoint covers every allocated block.
    last = ctx.updates[-1]
    assert last.bytes_done == last.bytes_total
    assert last.checkpoint[0][0] == 0


async def test_resumed_upload_skips_blocks_already_written(
    provider: AwsProvider, ebs: Any, disk: DiskLocator, tmp_path: Path
) -> None:
    env: dict[str, Any] = {}
    action = ActionContext(action_id="mig-resume")
    info = export_info([disk])
    # Paced (4 s for the 2 MiB of data), so that the first progress report comes before the last block
    # however busy the machine: unpaced, a loaded one had uploaded every block by then.
    first = Ctx(tmp_path, fail_after=1, exc=RuntimeError("worker lost"), bandwidth_limit=512 * 1024)
    with pytest.raises(RuntimeError, match="worker lost"):
        await provider.import_disk(env, info, disk, first.ctx, action)
    checkpoint = first.updates[-1].checkpoint
    # The disk has non-zero data in blocks 0, 2, 4 and 6; its chunks are 2 MiB (4 blocks).
    done_before = sum(1 for b in (0, 2, 4, 6) if any(o <= b * BLOCK < o + n for o, n in checkpoint))
    assert 1 <= done_before < 4, checkpoint

    # A fresh provider (a new worker process) resumes from the heartbeat's checkpoint,
    # which comes back from Temporal as JSON.
    second = Ctx(tmp_path, checkpoint=json.loads(json.dumps(checkpoint)))
    imported = await AwsProvider(provider.connection_info).import_disk(env, info, disk, second.ctx, action)

    assert imported.details["blocks_from_checkpoint"] == done_before
    assert imported.details["blocks_written"] == 4 - done_before  # only what the checkpoint lacked
    assert imported.details["chunks_resumed"] >= 1
    assert imported.details["changed_blocks_count"] == 4  # earlier + now
    snapshot_id = imported.details["snapshot_id"]
    assert any(snapshot_id in e and f"resuming after {done_before} blocks" in e for e in second.events)
    assert read_snapshot(ebs, snapshot_id, disk.size_bytes) == local_bytes(disk)
    assert imported.details["verified"] is True

    # A third attempt after completion reuses the finished snapshot and writes nothing.
    third = Ctx(tmp_path)
    again = await provider.import_disk(env, info, disk, third.ctx, action)
    assert again.details["snapshot_id"] == snapshot_id
    assert again.details.get("reused") is True
    assert third.updates == []


async def test_cancel_mid_upload_leaves_nothing_behind(
    provider: AwsProvider, conn_info: dict[str, Any], ec2: Any, disk: DiskLocator, tmp_path: Path
) -> None:
    env: dict[str, Any] = {}
    action = ActionContext(action_id="mig-cancel", source_name="web01")
    # The first progress call comes once a chunk is written, before the snapshot is completed: with
    # its two chunks on eight lanes, a second call may never come (both chunks done in one wait).
    ctx = Ctx(tmp_path, fail_after=1, exc=asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await provider.import_disk(env, export_info([disk]), disk, ctx.ctx, action)
    mine = [{"Name": "tag:sterna:migration-id", "Values": ["mig-cancel"]}]
    assert len(ec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"]) == 1

    # The workflow's cleanup runs in another activity: it knows neither disks nor ids.
    lines = AwsProvider(conn_info).cleanup(env, "web01", [], None, succeeded=False, action=action)

    assert any(line.startswith("deleted snapshot snap-") for line in lines)
    assert ec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"] == []
    assert ec2.describe_images(Owners=["self"], Filters=mine)["Images"] == []
    assert [i for r in ec2.describe_instances(Filters=mine)["Reservations"] for i in r["Instances"]] == []
    # Cleanup is repeatable.
    assert AwsProvider(conn_info).cleanup(env, "web01", [], None, succeeded=False, action=action) == []


async def test_bad_local_disk_is_invalid_input(provider: AwsProvider, tmp_path: Path) -> None:
    missing = DiskLocator(disk_id="d", size_bytes=BLOCK, path=str(tmp_path / "nope.raw"))
    with pytest.raises(InvalidInput, match="no local raw image"):
        await provider.import_disk({}, export_info([missing]), missing, Ctx(tmp_path).ctx)


def test_reader_rejects_a_block_whose_checksum_does_not_match(ebs: Any) -> None:
    # moto stores a wrong checksum without complaint (real AWS refuses the put), which lets
    # this test show the reader's own end-to-end check.
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    good, bad = pattern(7, BLOCK), pattern(8, BLOCK)
    for index, data, checksum in ((0, good, sha256_b64(good)), (3, bad, sha256_b64(good))):
        ebs.put_snapshot_block(
            SnapshotId=snapshot_id,
            BlockIndex=index,
            BlockData=data,
            DataLength=BLOCK,
            Checksum=checksum,
            ChecksumAlgorithm="SHA256",
        )
    ebs.complete_snapshot(SnapshotId=snapshot_id, ChangedBlocksCount=2)

    source = EbsSnapshotSource(ebs, snapshot_id, 4 * BLOCK)
    assert [(e.offset, e.length) for e in source.extents()] == [(0, BLOCK), (3 * BLOCK, BLOCK)]
    # Reads that straddle block boundaries fetch each block once.
    assert source.read(BLOCK - 10, 20) == good[-10:] + bytes(10)
    assert source.read(0, 100) == good[:100]
    assert source.blocks_fetched == 1
    with pytest.raises(IntegrityError, match=r"block 3 .*SHA-256 mismatch"):
        source.read(3 * BLOCK, 10)


async def test_upload_is_read_back_and_compared(
    provider: AwsProvider, ebs: Any, ec2: Any, disk: DiskLocator, tmp_path: Path
) -> None:
    env: dict[str, Any] = {}
    action = ActionContext(action_id="mig-verify")
    ctx = Ctx(tmp_path)
    imported = await provider.import_disk(env, export_info([disk]), disk, ctx.ctx, action)
    snapshot_id = imported.details["snapshot_id"]
    [event] = [e for e in ctx.events if "read back" in e]
    assert snapshot_id in event and "identical" in event, event
    assert re.search(r"digest xxh3-128:[0-9a-f]{32}", event), event  # the digest names its algorithm

    # A crash after CompleteSnapshot, before the read-back: the retry checks and tags, writing nothing.
    ec2.create_tags(Resources=[snapshot_id], Tags=[{"Key": "sterna:upload", "Value": "written"}])
    again = Ctx(tmp_path, checkpoint=[[0, disk.size_bytes]])
    second = await provider.import_disk(env, export_info([disk]), disk, again.ctx, action)
    assert second.details["snapshot_id"] == snapshot_id
    assert second.details["blocks_written"] == 0 and second.details["verified"] is True
    assert again.updates == []
    tags = {t["Key"]: t["Value"] for t in ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["Tags"]}
    assert tags["sterna:upload"] == "complete"


async def test_read_back_catches_a_block_that_differs(ebs: Any, disk: DiskLocator) -> None:
    # A completed snapshot holding the disk's blocks, except block 2, which holds other bytes:
    # what a block sent to the wrong index would leave behind. AWS's per-block checksum can't see it.
    local = local_bytes(disk)
    snapshot_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    for index in (0, 2, 4, 6):
        block = local[index * BLOCK : (index + 1) * BLOCK].ljust(BLOCK, b"\0")
        if index == 2:
            block = pattern(99, BLOCK)
        ebs.put_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockData=block, DataLength=BLOCK,
                               Checksum=sha256_b64(block), ChecksumAlgorithm="SHA256")
    target = EbsSnapshotTarget(ebs, snapshot_id, GIB)
    target.flush()

    source = open_local_source(disk.path or "")
    try:
        with pytest.raises(IntegrityError, match=rf"snapshot {snapshot_id} read back differs .* 1 chunk"):
            await verify_snapshot(source, target, "disk-0")
    finally:
        source.close()


async def test_waiting_and_reading_back_keep_heartbeating(
    provider: AwsProvider, disk: DiskLocator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without heartbeats a long read-back outlives the activity's heartbeat timeout and is retried forever.
    monkeypatch.setattr(importer, "HEARTBEAT_EVERY", 0.001)
    ctx = Ctx(tmp_path)
    await provider.import_disk({}, export_info([disk]), disk, ctx.ctx, ActionContext(action_id="mig-beat"))
    # The copier reports the full checkpoint once, with its last chunk; every further one is a heartbeat.
    after_copy = [u for u in ctx.updates if u.checkpoint == [(0, disk.size_bytes)]]
    assert len(after_copy) >= 2, ctx.updates[-3:]
    assert all(u.bytes_done == u.bytes_total for u in after_copy)


async def test_a_snapshot_that_fails_the_read_back_is_replaced(
    provider: AwsProvider, ebs: Any, ec2: Any, disk: DiskLocator, tmp_path: Path
) -> None:
    # An earlier attempt left a completed snapshot (tag "written") whose block 2 holds other bytes.
    env: dict[str, Any] = {}
    action = ActionContext(action_id="mig-bad-readback")
    tags = {"sterna:migration-id": "mig-bad-readback", "sterna:source-instance": "web01", "sterna:disk-id": "disk-0",
            "sterna:role": "import-snapshot", "sterna:upload": "written"}
    bad_id = ebs.start_snapshot(VolumeSize=1, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])["SnapshotId"]
    block = pattern(99, BLOCK)
    ebs.put_snapshot_block(SnapshotId=bad_id, BlockIndex=2, BlockData=block, DataLength=BLOCK,
                           Checksum=sha256_b64(block), ChecksumAlgorithm="SHA256")
    ebs.complete_snapshot(SnapshotId=bad_id, ChangedBlocksCount=1)

    with pytest.raises(IntegrityError, match="read back differs"):
        await provider.import_disk(env, export_info([disk]), disk, Ctx(tmp_path).ctx, action)
    assert ec2.describe_snapshots(Filters=[{"Name": "snapshot-id", "Values": [bad_id]}])["Snapshots"] == []

    # The retry (IntegrityError is retryable) uploads into a new snapshot, which reads back identical.
    imported = await provider.import_disk(env, export_info([disk]), disk, Ctx(tmp_path).ctx, action)
    assert imported.details["snapshot_id"] != bad_id
    assert imported.details["verified"] is True
    assert read_snapshot(ebs, imported.details["snapshot_id"], disk.size_bytes) == local_bytes(disk)


async def test_instances_of_one_migration_with_the_same_disk_id_get_snapshots_of_their_own(
    provider: AwsProvider, ebs: Any, disk: DiskLocator, tmp_path: Path
) -> None:
    """A migration's instances share disk ids (``disk-0``): none resumes into or reuses another's upload."""
    other = DiskLocator(disk_id=disk.disk_id, size_bytes=disk.size_bytes,
                        path=str(make_disk(tmp_path / "other.raw", disk.size_bytes, {0: pattern(9, 3 * BLOCK)})))
    action = ActionContext(action_id="mig-two-instances")
    first, second = export_info([disk]), export_info([other]).model_copy(update={"name": "web02", "id": "vm-2"})
    a = await provider.import_disk({}, first, disk, Ctx(tmp_path).ctx, action)
    b = await provider.import_disk({}, second, other, Ctx(tmp_path).ctx, action)
    assert b.details["snapshot_id"] != a.details["snapshot_id"]
    assert not b.details.get("reused")
    assert read_snapshot(ebs, a.details["snapshot_id"], disk.size_bytes) == local_bytes(disk)
    assert read_snapshot(ebs, b.details["snapshot_id"], other.size_bytes) == local_bytes(other)
    # ... and a retry of either still finds its own.
    again = await provider.import_disk({}, second, other, Ctx(tmp_path).ctx, action)
    assert again.details["snapshot_id"] == b.details["snapshot_id"] and again.details["reused"] is True
    # web02 fails: its cleanup (by tags, as after a crash) removes its snapshot, not web01's, still needed.
    provider.cleanup({}, "web02", [], None, succeeded=False, action=replace(action, source_name="web02"))
    mine = [{"Name": "tag:sterna:migration-id", "Values": ["mig-two-instances"]}]
    left = provider._clients({}).ec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"]
    assert [x["SnapshotId"] for x in left] == [a.details["snapshot_id"]]
