"""A replica snapshot's sync (``SnapshotReplicaProvider``: EBS direct), stopped halfway as by a killed
worker, resumes into the same pending snapshot: the blocks AWS already holds are not sent again, and
CompleteSnapshot is told every block of the snapshot's life (real AWS fails a snapshot whose count is off).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from diskio.base import DiskTarget
from diskio.local import LocalFileTarget, RawFileSource
from diskio.replica import ReplicaSync, sync_replica
from providers.aws.ebs import EbsSnapshotTarget
from providers.aws.provider import AwsProvider
from tests.peers.moto import conn_info, ebs, moto_url, provider
from tests.providers.aws.awshelpers import pattern, read_snapshot

__all__ = ["conn_info", "ebs", "moto_url", "provider"]

BLOCK = 512 * 1024
SIZE = 32 * BLOCK
ZERO = {3, 10, 11, 20, 27}  # blocks the source leaves zero: never put


class Killed(Exception):
    """The worker going away between two batches."""


async def _sync(target: DiskTarget, source: RawFileSource, *, resume_from: int = 0,
                kill_at: int | None = None) -> ReplicaSync:
    async def progress(done: int, _total: int) -> None:
        if kill_at is not None and done >= kill_at:
            raise Killed

    return await sync_replica(source, target, None, chunk_size=BLOCK, digest_size=16,
                              on_progress=progress, batch_chunks=4, resume_from=resume_from)


async def test_a_stopped_replica_sync_resumes_into_its_pending_snapshot(provider: AwsProvider, ebs: object,
                                                                       tmp_path: Path) -> None:
    tid = f"tr-{uuid.uuid4().hex[:8]}"  # the moto server outlives the test
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"".join(bytes(BLOCK) if i in ZERO else pattern(i, BLOCK) for i in range(SIZE // BLOCK)))
    source = RawFileSource(disk)
    try:
        sid, first = provider.start_replica_snapshot({}, tid, "vm-a", "disk-0", SIZE, None, "ex-1")
        with pytest.raises(Killed):
            await _sync(first, source, kill_at=SIZE // 2)
        assert isinstance(first, EbsSnapshotTarget)
        put_before = len(first.written)
        assert put_before == len([i for i in range(16) if i not in ZERO])

        # Another execution's retry, or another disk, never takes it.
        assert provider.pending_replica_snapshot({}, tid, "vm-a", "disk-0", SIZE, None, "ex-2") is None
        assert provider.pending_replica_snapshot({}, tid, "vm-a", "disk-1", SIZE, None, "ex-1") is None
        found = provider.pending_replica_snapshot({}, tid, "vm-a", "disk-0", SIZE, None, "ex-1")
        assert found is not None and found[0] == sid
        target = found[1]
        assert isinstance(target, EbsSnapshotTarget)
        again = await _sync(target, source, resume_from=SIZE // 2)
        assert again.chunks_resumed == put_before
        assert again.bytes_written == (16 - len([i for i in ZERO if i >= 16])) * BLOCK
        assert target.changed_blocks_count == SIZE // BLOCK - len(ZERO), "CompleteSnapshot's count: every block"
        assert target.completed

        # The digest map is the one a sync in one go makes: the next execution compares with it.
        whole = LocalFileTarget(tmp_path / "replica.raw", SIZE)
        try:
            assert again.digests == (await _sync(whole, source)).digests
        finally:
            whole.close()
    finally:
        source.close()
    assert read_snapshot(ebs, sid, SIZE) == disk.read_bytes()
