"""The copier on real sparse files: sparseness, zeros, digests, cancellation and resume."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.errors import IntegrityError
from diskio.base import DiskSource, Extent
from diskio.copier import CopyResult, copy_disk
from diskio.local import LocalFileTarget, RawFileSource, open_local_source
from diskio.progress import TransferProgress
from diskio.verify import compare_digests

MiB = 1024 * 1024
DiskFactory = Callable[..., Path]
SameBytes = Callable[[Path, Path], bool]

CHUNK = 1 * MiB
REPO = Path(__file__).resolve().parents[2]
LANES = 3


class CountingSource(DiskSource):
    """A real raw file source that counts the bytes it hands out."""

    def __init__(self, path: Path) -> None:
        self.inner = RawFileSource(path)
        self.bytes_read = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.inner.size

    def extents(self) -> list[Extent]:
        return self.inner.extents()

    def read(self, offset: int, length: int) -> bytes:
        data = self.inner.read(offset, length)
        with self._lock:
            self.bytes_read += len(data)
        return data

    def readinto(self, offset: int, view: memoryview) -> int:
        n = self.inner.readinto(offset, view)
        with self._lock:
            self.bytes_read += n
        return n

    def close(self) -> None:
        self.inner.close()


async def copy_file(src: Path, dst: Path, **kw: object) -> CopyResult:
    source = open_local_source(src)
    target = LocalFileTarget(dst, source.size)
    try:
        options: dict[str, Any] = {"chunk_size": CHUNK, "lanes": LANES, **kw}
        return await copy_disk(source, target, **options)
    finally:
        source.close()
        target.close()


async def test_copy_is_identical_sparse_and_reads_only_allocated_bytes(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes
) -> None:
    src = disk(size=64 * MiB, runs=[(0, 3 * MiB), (20 * MiB + 4096, 5 * MiB)], small_writes=20)
    source = CountingSource(src)
    allocated = sum(e.length for e in source.extents())
    target = LocalFileTarget(tmp_path / "dst.raw", source.size)
    result = await copy_disk(source, target, chunk_size=CHUNK, lanes=LANES)
    target.close()
    assert same_bytes(src, tmp_path / "dst.raw")
    assert source.bytes_read == result.bytes_read <= allocated
    assert result.bytes_written == allocated
    assert result.verified and result.bytes_verified == allocated
    dst_allocated = sum(e.length for e in RawFileSource(tmp_path / "dst.raw").extents())
    assert dst_allocated <= allocated  # the target stays sparse


async def test_all_zero_disk_moves_no_data_bytes(tmp_path: Path, same_bytes: SameBytes) -> None:
    src = tmp_path / "zeros.raw"
    with open(src, "wb") as f:  # fully allocated zeros: every byte is an extent
        f.write(bytes(16 * MiB))
    result = await copy_file(src, tmp_path / "dst.raw")
    assert result.bytes_read == 16 * MiB
    assert result.bytes_written == 0
    assert result.bytes_skipped_zero == 16 * MiB
    assert result.chunks_zero == result.chunks_copied == 16
    assert RawFileSource(tmp_path / "dst.raw").extents() == []
    assert same_bytes(src, tmp_path / "dst.raw")


async def test_hole_only_disk_reads_nothing(tmp_path: Path) -> None:
    src = tmp_path / "empty.raw"
    src.write_bytes(b"")
    with open(src, "r+b") as f:
        f.truncate(1 << 30)
    seen: list[TransferProgress] = []

    async def progress(p: TransferProgress) -> None:
        seen.append(p)

    result = await copy_file(src, tmp_path / "dst.raw", on_progress=progress)
    assert (result.bytes_read, result.bytes_written, result.chunks_total) == (0, 0, 0)
    assert seen[-1].checkpoint == [(0, 1 << 30)]


async def test_zero_runs_inside_data_chunks_are_not_written(tmp_path: Path, same_bytes: SameBytes) -> None:
    src = tmp_path / "thick.raw"
    data = bytearray(8 * MiB)  # allocated, mostly zeros, two small data islands
    data[100:200] = b"x" * 100
    data[5 * MiB : 5 * MiB + 10] = b"y" * 10
    src.write_bytes(bytes(data))
    result = await copy_file(src, tmp_path / "dst.raw", chunk_size=8 * MiB)
    assert same_bytes(src, tmp_path / "dst.raw")
    # only the zero-run units (at most 1 MiB each) that hold the two islands are written
    assert result.bytes_written <= 2 * MiB
    assert result.bytes_skipped_zero == 8 * MiB - result.bytes_written
    assert sum(e.length for e in RawFileSource(tmp_path / "dst.raw").extents()) <= 2 * MiB
    # blocks on disk too (SEEK_DATA does not see blocks allocated ahead and never written): nothing past the islands
    assert (tmp_path / "dst.raw").stat().st_blocks * 512 <= 2 * MiB


async def test_digest_matches_an_independent_check_of_both_sides(disk: DiskFactory, tmp_path: Path) -> None:
    src = disk(runs=[(MiB, 10 * MiB)], small_writes=5)
    result = await copy_file(src, tmp_path / "dst.raw")
    source, target = RawFileSource(src), LocalFileTarget(tmp_path / "dst.raw", 64 * MiB)
    check = await compare_digests(source, target, chunk_size=CHUNK)
    assert check.ok
    assert check.source_digest == check.target_digest == result.digest


class CorruptingTarget(LocalFileTarget):
    """A real file target whose writes at ``bad_offset`` flip a byte, ``times`` times; it counts read-backs."""

    def __init__(self, path: Path, size: int, bad_offset: int, times: int) -> None:
        super().__init__(path, size)
        self.bad_offset, self.times = bad_offset, times
        self.readbacks: list[int] = []

    def readinto(self, offset: int, view: memoryview) -> int:
        self.readbacks.append(offset)
        return super().readinto(offset, view)

    def write_view(self, offset: int, view: memoryview) -> None:
        if offset == self.bad_offset and self.times > 0:
            self.times -= 1
            spoiled = bytearray(view)
            spoiled[0] ^= 0xFF
            view = memoryview(spoiled)
        super().write_view(offset, view)


async def test_chunk_corrupted_on_write_is_caught_and_copied_again(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes
) -> None:
    src = disk(runs=[(0, 8 * MiB)])
    source = RawFileSource(src)
    target = CorruptingTarget(tmp_path / "dst.raw", source.size, bad_offset=3 * MiB, times=1)
    result = await copy_disk(source, target, chunk_size=CHUNK, lanes=LANES)
    assert result.repairs == 1
    assert same_bytes(src, tmp_path / "dst.raw")


class CountingReads(RawFileSource):
    """A raw file source that counts the reads made into the copier's buffers."""

    reads = 0

    def readinto(self, offset: int, view: memoryview) -> int:
        self.reads += 1
        return super().readinto(offset, view)


async def test_a_local_source_lends_its_pages_and_damage_is_still_caught(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes
) -> None:
    # the copier hashes and writes the source file's own pages and hashes the target's where they lie:
    # nothing is read into a buffer, on either side, but the damaged step, compared byte by byte
    src = disk(runs=[(0, 5 * MiB), (7 * MiB, 3 * 4096)], small_writes=4)
    source = CountingReads(src)
    target = CorruptingTarget(tmp_path / "dst.raw", source.size, bad_offset=3 * MiB, times=1)
    result = await copy_disk(source, target, chunk_size=CHUNK, lanes=LANES)
    target.close()
    source.close()
    assert source.reads == 0
    assert target.readbacks and all(3 * MiB <= at < 4 * MiB for at in target.readbacks), target.readbacks
    assert result.verified and result.repairs == 1
    assert same_bytes(src, tmp_path / "dst.raw")


async def test_chunk_that_stays_corrupt_is_reported_not_passed(disk: DiskFactory, tmp_path: Path) -> None:
    src = disk(runs=[(0, 8 * MiB)])
    source = RawFileSource(src)
    target = CorruptingTarget(tmp_path / "dst.raw", source.size, bad_offset=3 * MiB, times=99)
    with pytest.raises(IntegrityError, match=str(3 * MiB)):
        await copy_disk(source, target, chunk_size=CHUNK, lanes=LANES)


async def test_corruption_after_the_copy_is_found_by_the_digest_check_and_recopied(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes
) -> None:
    src = disk(runs=[(0, 6 * MiB)], small_writes=3)
    dst = tmp_path / "dst.raw"
    first = await copy_file(src, dst)
    with open(dst, "r+b") as f:  # bit rot in the middle of the fourth chunk
        f.seek(3 * MiB + 12345)
        f.write(b"\x42")
    source, target = RawFileSource(src), LocalFileTarget(dst, 64 * MiB)
    check = await compare_digests(source, target, chunk_size=CHUNK)
    assert not check.ok and check.mismatched == [(3 * MiB, CHUNK)]
    again = await copy_disk(source, target, chunk_size=CHUNK, checkpoint=check.checkpoint(source.size))
    assert again.chunks_copied == 1 and again.bytes_read == CHUNK
    assert again.digest == first.digest
    assert same_bytes(src, dst)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_copy_cancelled_at_a_random_point_resumes_to_an_identical_disk(
    disk: DiskFactory, tmp_path: Path, seed: int, same_bytes: SameBytes
) -> None:
    src = disk(size=96 * MiB, runs=[(0, 9 * MiB), (40 * MiB, 11 * MiB)], small_writes=30, seed=seed)
    dst = tmp_path / "dst.raw"
    fresh = await copy_file(src, tmp_path / "reference.raw")
    stop_after = random.Random(seed).randrange(1, fresh.chunks_total - 1)
    last: list[TransferProgress] = []

    async def heartbeat(p: TransferProgress) -> None:
        last.append(p)
        if len(last) >= stop_after:
            raise asyncio.CancelledError  # what Temporal raises at a heartbeat after cancel

    first_source = CountingSource(src)
    first_target = LocalFileTarget(dst, first_source.size)
    with pytest.raises(asyncio.CancelledError):
        await copy_disk(first_source, first_target, chunk_size=CHUNK, lanes=LANES, on_progress=heartbeat)
    first_target.close()
    checkpoint = last[-1].checkpoint
    assert len(checkpoint) <= 2 * LANES + 2  # compact: a prefix plus the lanes' islands

    second_source = CountingSource(src)
    second_target = LocalFileTarget(dst, second_source.size)
    result = await copy_disk(
        second_source, second_target, chunk_size=CHUNK, lanes=LANES, checkpoint=checkpoint
    )
    assert same_bytes(src, dst)
    assert result.digest == fresh.digest
    assert result.chunks_resumed > 0
    # Bytes read twice are those the first attempt read but did not report: at most a chunk a lane.
    reread = first_source.bytes_read + second_source.bytes_read - fresh.bytes_read
    assert 0 <= reread <= LANES * CHUNK


COPY_SCRIPT = """
import asyncio, json, os, sys
from diskio.copier import copy_disk
from diskio.local import LocalFileTarget, RawFileSource

src, dst, state = sys.argv[1:4]

async def heartbeat(p):
    tmp = state + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"bytes_done": p.bytes_done, "checkpoint": p.checkpoint}, f)
    os.replace(tmp, state)  # atomic: a kill never leaves half a checkpoint

async def main():
    source = RawFileSource(src)
    target = LocalFileTarget(dst, source.size)
    await copy_disk(source, target, chunk_size=1 << 20, lanes=3, on_progress=heartbeat,
                    bandwidth_limit=16 << 20)  # slow enough to be killed in the middle

asyncio.run(main())
"""


async def test_copy_process_killed_at_a_random_point_resumes_to_an_identical_disk(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes
) -> None:
    src = disk(size=64 * MiB, runs=[(0, 6 * MiB), (30 * MiB, 6 * MiB)], small_writes=10, seed=5)
    dst, state = tmp_path / "dst.raw", tmp_path / "state.json"
    total = sum(e.length for e in RawFileSource(src).extents())
    kill_after = random.Random(11).randrange(total // 8, total * 3 // 4)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        COPY_SCRIPT,
        str(src),
        str(dst),
        str(state),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        async with asyncio.timeout(120):  # a guard against a hung child, not a timing assertion
            while await asyncio.to_thread(progress_of, state) < kill_after:
                assert proc.returncode is None, "the copy process ended before it could be killed"
                await asyncio.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL: no cleanup, no last heartbeat
        await proc.wait()
    checkpoint = json.loads(state.read_text())["checkpoint"]  # lists, as a heartbeat round trip gives
    source = CountingSource(src)
    target = LocalFileTarget(dst, source.size)
    result = await copy_disk(source, target, chunk_size=MiB, lanes=LANES, checkpoint=checkpoint)
    target.close()
    assert same_bytes(src, dst)
    assert result.chunks_resumed > 0
    assert source.bytes_read == result.bytes_read < total


def progress_of(state: Path) -> int:
    try:
        return int(json.loads(state.read_text())["bytes_done"])
    except (FileNotFoundError, ValueError):
        return 0


async def test_cancelling_the_copy_task_stops_every_lane_before_it_returns(
    disk: DiskFactory, tmp_path: Path
) -> None:
    src = disk(size=64 * MiB, runs=[(0, 32 * MiB)])
    source = RawFileSource(src)
    target = LocalFileTarget(tmp_path / "dst.raw", source.size)
    first = asyncio.Event()

    async def progress(p: TransferProgress) -> None:
        first.set()

    task = asyncio.ensure_future(
        copy_disk(
            source, target, chunk_size=CHUNK, lanes=LANES, on_progress=progress, bandwidth_limit=64 * MiB
        )
    )
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # No lane may still hold the file descriptors that the caller is about to close.
    assert not [t for t in threading.enumerate() if t.name.startswith("diskio-lane")]
    source.close()
    target.close()


class BlockTarget(LocalFileTarget):
    """A real file target with EBS-like constraints that records every write it gets."""

    granularity = alignment = 512 * 1024
    max_write = 1024 * 1024  # smaller than a chunk, like Azure's 4 MiB page-blob limit
    io_size = 0  # whole chunks per step, as a remote target would ask
    zero_initialized = True

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(path, size)
        self.zero_initialized = True
        self.writes: list[tuple[int, int]] = []

    def write_view(self, offset: int, view: memoryview) -> None:
        self.writes.append((offset, len(view)))
        super().write_view(offset, view)


async def test_writes_respect_the_target_granularity_alignment_and_size_limit(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes
) -> None:
    # odd offsets and a small tail: extents must be widened to whole 512 KiB blocks
    size = 20 * MiB + 4096
    src = disk(size=size, runs=[(3 * MiB + 100, 2 * MiB), (20 * MiB, 4096)], small_writes=4)
    source = RawFileSource(src)
    target = BlockTarget(tmp_path / "dst.raw", size)
    await copy_disk(source, target, chunk_size=4 * MiB, lanes=2)
    target.close()
    assert same_bytes(src, tmp_path / "dst.raw")
    block = 512 * 1024
    for offset, length in target.writes:
        assert offset % block == 0
        assert length <= target.max_write
        assert length % block == 0 or offset + length == size


class FailingSource(CountingSource):
    """A real file source whose reads fail past ``bad_offset`` (a dying disk, a dropped link)."""

    def __init__(self, path: Path, bad_offset: int) -> None:
        super().__init__(path)
        self.bad_offset = bad_offset

    def readinto(self, offset: int, view: memoryview) -> int:
        if offset >= self.bad_offset:
            raise OSError(5, "Input/output error")
        return super().readinto(offset, view)


async def test_a_read_error_stops_the_copy_and_keeps_the_checkpoint_honest(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes
) -> None:
    src = disk(runs=[(0, 8 * MiB)])
    seen: list[TransferProgress] = []

    async def progress(p: TransferProgress) -> None:
        seen.append(p)

    source = FailingSource(src, bad_offset=5 * MiB)
    target = LocalFileTarget(tmp_path / "dst.raw", source.size)
    with pytest.raises(OSError, match="Input/output"):
        await copy_disk(source, target, chunk_size=CHUNK, lanes=LANES, on_progress=progress)
    # nothing at or past the failing offset is ever reported done
    done = seen[-1].checkpoint if seen else []
    assert all(off + length <= 5 * MiB for off, length in done)
    target.close()
    # and a retry (a new attempt reopens its scratch file) completes from there
    target = LocalFileTarget(tmp_path / "dst.raw", source.size)
    result = await copy_disk(RawFileSource(src), target, chunk_size=CHUNK, lanes=LANES, checkpoint=done)
    target.close()
    assert not result.checkpoint_discarded
    assert result.chunks_resumed == sum(length for off, length in done if off < 8 * MiB) // CHUNK
    assert same_bytes(src, tmp_path / "dst.raw")


class RottingTarget(LocalFileTarget):
    """A real file target that garbles one byte at ``offset`` on its first ``times`` flushes.

    Every write reads back fine at once; only a check after ``flush`` can see the damage.
    """

    def __init__(self, path: Path, size: int, offset: int, times: int) -> None:
        super().__init__(path, size)
        self.offset, self.times = offset, times

    def flush(self) -> None:
        super().flush()
        if self.times > 0:
            self.times -= 1
            self.write(self.offset, bytes([self.read(self.offset, 1)[0] ^ 0x55]))


async def test_final_check_recomputes_the_target_digest_and_repairs_late_damage(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes
) -> None:
    src = disk(runs=[(0, 6 * MiB)], small_writes=3)
    source = RawFileSource(src)
    target = RottingTarget(tmp_path / "dst.raw", source.size, offset=2 * MiB + 77, times=1)
    result = await copy_disk(source, target, chunk_size=CHUNK, lanes=LANES, final_check=True)
    target.close()
    assert result.repairs == 1
    assert result.target_digest == result.digest
    assert same_bytes(src, tmp_path / "dst.raw")


async def test_final_check_reports_damage_that_comes_back(disk: DiskFactory, tmp_path: Path) -> None:
    src = disk(runs=[(0, 6 * MiB)])
    source = RawFileSource(src)
    target = RottingTarget(tmp_path / "dst.raw", source.size, offset=2 * MiB + 77, times=2)
    with pytest.raises(IntegrityError, match=f"{2 * MiB}\\+{MiB}"):
        await copy_disk(source, target, chunk_size=CHUNK, lanes=LANES, final_check=True)
    target.close()


async def test_checkpoint_against_a_new_target_is_ignored_not_trusted(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes
) -> None:
    # A retry on another worker: the checkpoint says "all done", but the scratch file is new.
    src = disk(runs=[(0, 4 * MiB)])
    result = await copy_file(src, tmp_path / "elsewhere.raw", checkpoint=[(0, 64 * MiB)])
    assert result.checkpoint_discarded
    assert result.chunks_resumed == 0 and result.bytes_read == 4 * MiB
    assert same_bytes(src, tmp_path / "elsewhere.raw")


async def test_a_cancel_stops_lanes_waiting_for_their_bandwidth_share(disk: DiskFactory, tmp_path: Path) -> None:
    # Issue 11, reproducers 7 and 9: 4 lanes of 8 MiB chunks under 1 MiB/s book half a minute of
    # the timeline ahead; a cancelled copy used to sleep that out, and read the chunks after it.
    src = disk(size=64 * MiB, runs=[(0, 64 * MiB)])
    source = CountingSource(src)
    target = LocalFileTarget(tmp_path / "dst.raw", source.size)
    first = asyncio.Event()

    async def progress(p: TransferProgress) -> None:
        first.set()

    task = asyncio.ensure_future(
        copy_disk(source, target, chunk_size=8 * MiB, lanes=4, on_progress=progress, bandwidth_limit=MiB)
    )
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The first chunk passes on the limiter's burst; the three lanes booked behind it read nothing.
    assert source.bytes_read <= 8 * MiB, source.bytes_read
    assert not [t for t in threading.enumerate() if t.name.startswith("diskio-lane")]
    source.close()
    target.close()


async def test_lanes_waiting_for_bandwidth_keep_the_progress_calls_coming(
    disk: DiskFactory, tmp_path: Path
) -> None:
    # A chunk that waits longer than a heartbeat period for its share must not silence the caller:
    # its heartbeat is what a cancel answers, and what keeps the attempt from timing out.
    src = disk(size=8 * MiB, runs=[(0, 4 * MiB)])
    calls: list[int] = []

    async def progress(p: TransferProgress) -> None:
        calls.append(p.bytes_done)

    await copy_file(src, tmp_path / "dst.raw", chunk_size=2 * MiB, lanes=1, on_progress=progress,
                    bandwidth_limit=MiB)
    # Two chunks: the second waits ~2 s for its share; the copier reports the unchanged progress meanwhile.
    assert calls.count(2 * MiB) >= 2, calls
    assert calls[-1] == 4 * MiB
