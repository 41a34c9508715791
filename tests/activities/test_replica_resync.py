"""A replication that moved off a lost host re-syncs the replica from the new snapshot, identical to it.

Execution 2 of a transfer starts on a host that writes part of its first snapshot into the replica and
is then lost: the replica is untrusted, and its digest map is still execution 1's. The VM runs on; its
second snapshot, taken on another host, holds one of those chunks as execution 1 saw it again. Compared
with the map, that chunk looks unchanged and would keep the first snapshot's bytes; the plan of the
moved replication (``DiskStepInput.failovers``) is a full sync instead. A retry from the *same*
snapshot keeps comparing with the map, which is sound there (``activities.transfers._sync_plan``).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from activities.transfers import _sync_plan
from diskio.local import LocalFileTarget, RawFileSource
from diskio.replica import ReplicaSync, sync_replica
from store.models import ReplicaDisk
from workflows.transfer_types import DIGEST_SIZE, REPLICA_CHUNK

SIZE = 16 * REPLICA_CHUNK
#: the chunk the VM changes in the first snapshot of execution 2 and changes back before the second
FLIPPED = 5


async def _noop(_done: int, _total: int) -> None:
    return None


def _sync(src: Path, replica: Path, previous: bytes | None) -> ReplicaSync:
    source, target = RawFileSource(src), LocalFileTarget(replica, SIZE)
    try:
        return asyncio.run(sync_replica(source, target, previous, chunk_size=REPLICA_CHUNK,
                                        digest_size=DIGEST_SIZE, on_progress=_noop))
    finally:
        source.close()
        target.close()


def _disk(path: Path, flipped: bool) -> None:
    rng = random.Random(7)
    data = bytearray(rng.randbytes(SIZE))
    if flipped:
        data[FLIPPED * REPLICA_CHUNK:(FLIPPED + 1) * REPLICA_CHUNK] = rng.randbytes(REPLICA_CHUNK)
    path.write_bytes(bytes(data))


def _plan(known: ReplicaDisk, replica: Path, moved: bool) -> tuple[bytes | None, int]:
    # in an activity's context: an own retry reads its previous attempt's heartbeat (here: none)
    return ActivityEnvironment().run(_sync_plan, known, replica, SIZE, "x2", None, moved)


def test_a_moved_replication_resyncs_in_full_and_leaves_the_replica_identical(tmp_path: Path) -> None:
    before, first, second = tmp_path / "v0.raw", tmp_path / "snap-1.raw", tmp_path / "snap-2.raw"
    _disk(before, flipped=False)
    _disk(first, flipped=True)
    _disk(second, flipped=False)
    replica = tmp_path / "replica.raw"
    map0 = _sync(before, replica, None).digests  # execution 1, trusted
    # Execution 2's first host distrusted the replica (not a full sync: the map stays) and wrote the
    # first snapshot's changed chunk before it was lost.
    assert _sync(first, replica, map0).chunks_written == 1
    known = ReplicaDisk(transfer_id="t", instance="vm-a", disk_id="disk-0", path=str(replica), format="raw",
                        size_bytes=SIZE, chunk_size=REPLICA_CHUNK, digests=map0, trusted=False,
                        last_execution_id="x2")

    # Retried from the same snapshot, the map is sound; from the new one, it is not used.
    assert _plan(known, replica, moved=False) == (map0, 0)
    previous, resume = _plan(known, replica, moved=True)
    assert (previous, resume) == (None, 0)
    # The map would have kept the first snapshot's chunk: the reason for the full sync.
    stale = tmp_path / "stale.raw"
    stale.write_bytes(replica.read_bytes())
    assert _sync(second, stale, map0).chunks_written == 0 and stale.read_bytes() != second.read_bytes()

    # A full sync writes into a fresh file (as the activity does when there is no map and nothing to resume).
    replica.unlink()
    _sync(second, replica, previous)
    assert replica.read_bytes() == second.read_bytes()


def test_a_moved_replication_still_compares_a_trusted_replica_with_its_map(tmp_path: Path) -> None:
    """The lost host never wrote: the replica is as its map says, and the sync stays incremental."""
    before, second = tmp_path / "v0.raw", tmp_path / "snap-2.raw"
    _disk(before, flipped=False)
    _disk(second, flipped=True)
    replica = tmp_path / "replica.raw"
    map0 = _sync(before, replica, None).digests
    known = ReplicaDisk(transfer_id="t", instance="vm-a", disk_id="disk-0", path=str(replica), format="raw",
                        size_bytes=SIZE, chunk_size=REPLICA_CHUNK, digests=map0, trusted=True,
                        last_execution_id="x1")
    previous, resume = _plan(known, replica, moved=True)
    assert (previous, resume) == (map0, 0)
    assert _sync(second, replica, previous).chunks_written == 1
    assert replica.read_bytes() == second.read_bytes()
