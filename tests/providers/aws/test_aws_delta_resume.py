"""A deployment's delta upload (``providers.aws.delta``), stopped between two batches of blocks,
resumes into the same pending child snapshot from the checkpoint its progress carried.

The child must read back as the whole deployed disk, as on AWS: ``ebs_inheritance`` makes moto's
child snapshots start with their parent's blocks (moto ignores ``ParentSnapshotId`` otherwise).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.models import DiskLocator
from diskio.base import Extent
from diskio.local import open_local_source
from providers.aws.provider import AwsProvider
from providers.base import ActionContext
from tests.peers.moto import conn_info, ebs, ebs_inheritance, fast_polling, moto_url, provider
from tests.providers.aws.awshelpers import Ctx, export_info, pattern, read_snapshot

__all__ = ["conn_info", "ebs", "ebs_inheritance", "fast_polling", "moto_url", "provider"]

BLOCK = 512 * 1024
SIZE = 32 * BLOCK


class Killed(Exception):
    """The worker going away between two batches."""


@pytest.mark.usefixtures("ebs_inheritance")
async def test_delta_upload_resumes_from_its_checkpoint(provider: AwsProvider, ebs: object, tmp_path: Path) -> None:
    sid, target = provider.start_replica_snapshot({}, "tr-1", "vm-a", "disk-0", SIZE, None)
    replica = b"".join(pattern(i, BLOCK) for i in range(SIZE // BLOCK))
    for i in range(SIZE // BLOCK):
        target.write(i * BLOCK, replica[i * BLOCK:(i + 1) * BLOCK])
    target.flush()
    # The deployment changed 20 blocks (more than two batches of EBS_LANES), one of them to zeros.
    deployed = bytearray(replica)
    changed = list(range(4, 24))
    for i in changed:
        deployed[i * BLOCK:(i + 1) * BLOCK] = bytes(BLOCK) if i == 9 else pattern(100 + i, BLOCK)
    raw = tmp_path / "deployed.raw"
    raw.write_bytes(bytes(deployed))
    disk = DiskLocator(disk_id="disk-0", size_bytes=SIZE, details={"replica_snapshot": sid})
    info, action = export_info([disk]), ActionContext(action_id="dep-1")
    extents = [Extent(i * BLOCK, BLOCK) for i in changed]

    view = open_local_source(str(raw))
    try:
        first = Ctx(tmp_path, fail_after=2, exc=Killed())  # the initial update, then one batch
        with pytest.raises(Killed):
            await provider.import_replica_delta({}, info, disk, view, extents, first.ctx, action)
        checkpoint = first.updates[-1].checkpoint
        assert checkpoint, "the progress after a batch carries the blocks put"
        again = Ctx(tmp_path, checkpoint=checkpoint)
        imported = await provider.import_replica_delta({}, info, disk, view, extents, again.ctx, action)
    finally:
        view.close()

    done = next(e for e in again.events if "complete (" in e)
    counts = re.search(r"\((\d+) blocks written now, (\d+) from the checkpoint", done)
    assert counts, again.events
    now, resumed = int(counts.group(1)), int(counts.group(2))
    assert resumed > 0 and now > 0 and now + resumed == len(changed), done
    assert imported.details["blocks_from_checkpoint"] == resumed
    assert imported.details["snapshot_id"] != sid
    assert read_snapshot(ebs, imported.details["snapshot_id"], SIZE) == bytes(deployed)
