"""Replica sync by chunk digests: writes only what differs, a full sync into a fresh file, resume."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections.abc import Callable
from pathlib import Path

import blake3
import pytest

from diskio import digest
from diskio.base import Extent
from diskio.local import LocalFileTarget, RawFileSource
from diskio.replica import ReplicaSync, sync_replica

CHUNK = 64 * 1024
SIZE = 8 * 1024 * 1024


async def _noop(_done: int, _total: int) -> None:
    return None


def _sync(src: Path, dst: Path, previous: bytes | None, resume_from: int = 0,
          changed: list[Extent] | None = None) -> ReplicaSync:
    source, target = RawFileSource(src), LocalFileTarget(dst, SIZE)
    try:
        return asyncio.run(sync_replica(source, target, previous, chunk_size=CHUNK, digest_size=16,
                                        on_progress=_noop, resume_from=resume_from, changed=changed))
    finally:
        source.close()
        target.close()


def _disk(path: Path) -> None:
    rng = random.Random(1)
    with path.open("wb") as f:
        f.truncate(SIZE)
        for slot in rng.sample(range(SIZE // CHUNK), 20):
            f.seek(slot * CHUNK)
            f.write(rng.randbytes(CHUNK))


def test_full_then_incremental_writes_only_changed_chunks(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.raw", tmp_path / "replica.raw"
    _disk(src)
    full = _sync(src, dst, None)
    assert full.bytes_written == 20 * CHUNK and dst.read_bytes() == src.read_bytes()
    with src.open("r+b") as f:
        f.seek(3 * CHUNK + 100)
        f.write(b"x" * 10)  # one chunk changes
        f.seek(7 * CHUNK)
        f.write(bytes(CHUNK))  # a chunk becomes zero (or stays zero)
    again = _sync(src, dst, full.digests)
    assert again.bytes_written <= 2 * CHUNK and again.chunks_written >= 1
    assert dst.read_bytes() == src.read_bytes()
    assert _sync(src, dst, again.digests).bytes_written == 0


def test_resume_hashes_the_done_part_from_the_replica(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.raw", tmp_path / "replica.raw"
    _disk(src)
    full = _sync(src, dst, None)
    resumed = _sync(src, dst, None, resume_from=SIZE // 2)
    assert resumed.digests == full.digests
    assert resumed.bytes_read < full.bytes_read


def _blake2b_map(path: Path) -> bytes:
    """The map a SHA-256-era engine stored: bare BLAKE2b-16 per chunk, no header."""
    data = path.read_bytes()
    return b"".join(hashlib.blake2b(data[i:i + CHUNK], digest_size=16).digest() for i in range(0, SIZE, CHUNK))


def _blake3_map(path: Path) -> bytes:
    """The map the BLAKE3-era engine stored (2026-11 to 2026-12): its header, then BLAKE3-16 per chunk.

    Built here byte by byte, not with ``digest.encode_map``, so that a change there cannot hide."""
    data = path.read_bytes()
    digests = b"".join(blake3.blake3(data[i:i + CHUNK]).digest(length=16) for i in range(0, SIZE, CHUNK))
    return b"SDM1" + bytes([6]) + b"blake3" + bytes([16]) + digests


OLD_MAPS = pytest.mark.parametrize("old_map", [_blake2b_map, _blake3_map], ids=["bare-blake2b", "tagged-blake3"])


@OLD_MAPS
def test_a_legacy_map_is_still_understood_and_replaced_by_a_tagged_one(
    tmp_path: Path, old_map: Callable[[Path], bytes]
) -> None:
    src, dst = tmp_path / "src.raw", tmp_path / "replica.raw"
    _disk(src)
    _sync(src, dst, None)
    legacy = old_map(dst)
    with src.open("r+b") as f:
        f.seek(5 * CHUNK + 7)
        f.write(b"changed")
    again = _sync(src, dst, legacy)
    assert again.chunks_written == 1 and dst.read_bytes() == src.read_bytes()
    decoded = digest.decode_map(again.digests, SIZE // CHUNK, 16)
    assert decoded is not None and decoded[0] == digest.ALGORITHM == "xxh3-128"
    assert _sync(src, dst, again.digests).bytes_written == 0


@OLD_MAPS
def test_a_legacy_map_is_compared_in_full_even_when_the_source_names_its_changes(
    tmp_path: Path, old_map: Callable[[Path], bytes]
) -> None:
    """Unchanged chunks keep their old digest only if it is in today's algorithm: a legacy map is re-read."""
    src, dst = tmp_path / "src.raw", tmp_path / "replica.raw"
    _disk(src)
    _sync(src, dst, None)
    again = _sync(src, dst, old_map(dst), changed=[Extent(5 * CHUNK, CHUNK)])
    assert again.bytes_read == 20 * CHUNK and again.bytes_written == 0
    assert again.digests == _sync(src, tmp_path / "fresh.raw", None).digests


def test_a_map_that_cannot_be_read_is_ignored_and_the_sync_is_full(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.raw", tmp_path / "replica.raw"
    _disk(src)
    full = _sync(src, dst, None)
    tagged = digest.decode_map(full.digests, SIZE // CHUNK, 16)
    assert tagged is not None
    unknown = digest.encode_map(tagged[1], 16, algorithm="md5")
    dst.unlink()
    again = _sync(src, dst, unknown)
    assert again.bytes_written == 20 * CHUNK and dst.read_bytes() == src.read_bytes()
def test_changed_areas_limit_what_is_read_and_keep_the_other_digests(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.raw", tmp_path / "replica.raw"
    _disk(src)
    full = _sync(src, dst, None)
    with src.open("r+b") as f:
        f.seek(5 * CHUNK + 10)
        f.write(b"y" * 100)
    # The source says only chunk 5 changed (a bitmap's granularity may cover more: 5 and 6).
    again = _sync(src, dst, full.digests, changed=[Extent(5 * CHUNK, 2 * CHUNK)])
    assert again.bytes_read <= 2 * CHUNK and again.bytes_written == CHUNK
    assert dst.read_bytes() == src.read_bytes()
    # The map is the same as a full comparison's: the chunks not read kept their digests.
    assert again.digests == _sync(src, tmp_path / "fresh.raw", None).digests
    # Without a previous map the changed areas say nothing: a full sync.
    assert _sync(src, tmp_path / "other.raw", None, changed=[]).bytes_written > 0


class GatedSource(RawFileSource):
    """A real file source whose second read waits at a gate: a sync is cancelled while its thread reads."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads = 0
        self.reached = threading.Event()
        self.gate = threading.Event()

    def read(self, offset: int, length: int) -> bytes:
        self.reads += 1
        if self.reads == 2:
            self.reached.set()
            self.gate.wait(30)
        return super().read(offset, length)


def test_a_cancelled_sync_stops_its_thread_before_it_returns(tmp_path: Path) -> None:
    # Issue 11, reproducer 7: the batch thread read (and wrote) on after the activity was cancelled.
    src, dst = tmp_path / "src.raw", tmp_path / "replica.raw"
    _disk(src)
    source, target = GatedSource(src), LocalFileTarget(dst, SIZE)

    async def run() -> int:
        task = asyncio.ensure_future(sync_replica(source, target, None, chunk_size=CHUNK, digest_size=16,
                                                  on_progress=_noop))
        await asyncio.to_thread(source.reached.wait, 30)
        task.cancel()
        asyncio.get_running_loop().call_later(0.2, source.gate.set)
        with pytest.raises(asyncio.CancelledError):
            await task
        return source.reads

    try:
        at_return = asyncio.run(run())  # asyncio.run also waits for every executor thread to end
    finally:
        source.close()
        target.close()
    assert at_return == source.reads == 2, (at_return, source.reads)


class GatedTarget(LocalFileTarget):
    """Its first write holds until a progress report arrives meanwhile, as a PutSnapshotBlock round trip
    on a loaded host outlasts a heartbeat period; without one it fails the sync."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(path, size)
        self.writing, self.reported = threading.Event(), threading.Event()

    def write(self, offset: int, data: bytes) -> None:
        if not self.writing.is_set():
            self.writing.set()
            if not self.reported.wait(10):
                raise AssertionError("no progress report while a batch's write was under way")
        super().write(offset, data)


def test_a_slow_batch_keeps_reporting_progress_while_it_runs(tmp_path: Path) -> None:
    # A REPLICATE_DISKS to AWS (512 KiB chunks, 64 per batch, one round trip each) ended in a heartbeat
    # timeout under load: its progress, the activity's heartbeat, came only between batches.
    src, dst = tmp_path / "src.raw", tmp_path / "replica.raw"
    _disk(src)
    source, target = RawFileSource(src), GatedTarget(dst, SIZE)
    done: list[int] = []

    async def report(bytes_done: int, _total: int) -> None:
        done.append(bytes_done)
        if target.writing.is_set():
            target.reported.set()

    try:
        asyncio.run(sync_replica(source, target, None, chunk_size=CHUNK, digest_size=16, on_progress=report,
                                 keepalive=0.1))
    finally:
        source.close()
        target.close()
    assert done[0] == 0, "the report made while the first batch ran claims nothing across yet"
    assert done == sorted(done) and done[-1] == SIZE, "a report while a batch runs claims only what is across"
    assert dst.read_bytes() == src.read_bytes()


class LoopBoundExtents(RawFileSource):
    """A source whose extent listing blocks, as ``qemu-img map`` of a large VMDK does, until the event
    loop has run meanwhile: listed on the loop itself, it never sees that and fails the sync."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.listing, self.loop_ran = threading.Event(), threading.Event()

    def extents(self) -> list[Extent]:
        self.listing.set()
        if not self.loop_ran.wait(5):
            raise AssertionError("the event loop did not run while the extents were listed")
        return super().extents()


def test_the_event_loop_stays_free_while_the_source_lists_its_extents(tmp_path: Path) -> None:
    # The loop heartbeats every activity of the worker: a blocking call on it stalls them all.
    src, dst = tmp_path / "src.raw", tmp_path / "replica.raw"
    _disk(src)
    source, target = LoopBoundExtents(src), LocalFileTarget(dst, SIZE)

    async def run() -> None:
        sync = asyncio.ensure_future(sync_replica(source, target, None, chunk_size=CHUNK, digest_size=16,
                                                  on_progress=_noop))
        while not sync.done():
            if source.listing.is_set():
                source.loop_ran.set()
            await asyncio.sleep(0)  # a turn of the loop, no more
        await sync

    try:
        asyncio.run(run())
    finally:
        source.close()
        target.close()
    assert dst.read_bytes() == src.read_bytes()
