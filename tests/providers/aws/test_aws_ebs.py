"""The EBS reader and writer as ``diskio`` endpoints: snapshot to snapshot, the way the copier drives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diskio.copier import copy_disk
from providers.aws.ebs import EbsSnapshotSource, EbsSnapshotTarget
from tests.providers.aws.awshelpers import Ctx, pattern

BLOCK = 512 * 1024
GiB = 1024**3


async def test_snapshot_to_snapshot_copy_keeps_every_byte(
    ebs: Any, guest_volumes: Any, ec2: Any, tmp_path: Path
) -> None:
    # A source snapshot holding 3 non-zero blocks and one zero block (moto-side seeding, see conftest).
    volume_id = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    data = pattern(1, BLOCK) + bytes(BLOCK) + pattern(2, 2 * BLOCK) + bytes(3 * BLOCK) + b"tail" * 1000
    guest_volumes.write(volume_id, data)
    source_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]

    target_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    src = EbsSnapshotSource(ebs, source_id, GiB)
    dst = EbsSnapshotTarget(ebs, target_id, GiB)
    ctx = Ctx(tmp_path)
    result = await copy_disk(src, dst, checkpoint=None, on_progress=ctx.progress, chunk_size=BLOCK)

    assert dst.completed  # the copier's flush is CompleteSnapshot
    assert result.chunks_total == 4  # only the listed blocks are visited
    assert sorted(dst.written) == [0, 2, 3, 7]
    assert dst.changed_blocks_count == 4
    copy = EbsSnapshotSource(ebs, target_id, GiB)
    assert copy.read(0, len(data)) == data
    assert src.blocks_fetched == 4
