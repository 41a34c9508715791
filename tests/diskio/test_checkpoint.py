"""Checkpoint files: a killed copy resumes from its last chunks, and no claim outruns the target."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from diskio.checkpoint import Checkpointer, CheckpointFile, boot_id
from diskio.copier import copy_disk
from diskio.local import LocalFileTarget, RawFileSource
from diskio.progress import TransferProgress
from diskio.ranges import Range, RangeSet, subtract, total
from diskio.replica import sync_replica
from tests.diskio.test_copier import CountingSource

MiB = 1024 * 1024
DiskFactory = Callable[..., Path]
SameBytes = Callable[[Path, Path], bool]
REPO = Path(__file__).resolve().parents[2]
LANES = 3

# The copy runs in a child process that is SIGKILLed: its on_progress (what a heartbeat would
# carry) goes to a state file the test polls; its checkpoint file is the one the retry reads.
KILLED_COPY = """
import asyncio, json, os, sys
from diskio.checkpoint import CheckpointFile, Checkpointer
from diskio.copier import copy_disk
from diskio.local import LocalFileTarget, RawFileSource

src, dst, state, ckpt = sys.argv[1:5]

async def progress(p):
    tmp = state + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"bytes_done": p.bytes_done, "bytes_total": p.bytes_total}, f)
    os.replace(tmp, state)

async def main():
    source = RawFileSource(src)
    target = LocalFileTarget(dst, source.size)
    await copy_disk(source, target, chunk_size=1 << 20, lanes=3, on_progress=progress,
                    bandwidth_limit=16 << 20, durable=Checkpointer(CheckpointFile(ckpt, "work")))

asyncio.run(main())
"""


def _state(path: Path) -> tuple[int, int]:
    try:
        data = json.loads(path.read_text())
        return int(data["bytes_done"]), int(data["bytes_total"])
    except (FileNotFoundError, ValueError):
        return 0, 0


async def test_a_copy_killed_at_90_percent_rereads_at_most_the_rest_plus_a_chunk_per_lane(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes
) -> None:
    src = disk(size=96 * MiB, runs=[(0, 20 * MiB), (50 * MiB, 20 * MiB)], small_writes=10, seed=3)
    dst, state, ckpt = tmp_path / "dst.raw", tmp_path / "state.json", tmp_path / "dst.raw.checkpoint"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_COPY, str(src), str(dst), str(state), str(ckpt),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        async with asyncio.timeout(120):  # a guard against a hung child, not a timing assertion
            while (seen := await asyncio.to_thread(_state, state))[0] * 10 < seen[1] * 9 or not seen[1]:
                assert proc.returncode is None, "the copy process ended before it could be killed"
                await asyncio.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL: no cleanup, no last heartbeat
        await proc.wait()
    done, allocated = seen
    assert done < allocated, "the copy finished before the kill"
    saved = CheckpointFile(ckpt, "work").load()
    assert saved is not None and saved.same_boot
    source = CountingSource(src)
    target = LocalFileTarget(dst, source.size)
    result = await copy_disk(source, target, chunk_size=MiB, lanes=LANES, checkpoint=saved.ranges)
    target.close()
    assert same_bytes(src, dst)
    # The bound: a kill at 90 % re-reads at most 10 % plus one chunk per lane ...
    assert source.bytes_read <= allocated // 10 + LANES * MiB, (source.bytes_read, allocated)
    # ... and the file is never behind what the progress (a heartbeat) reported before the kill.
    assert source.bytes_read == result.bytes_read <= allocated - done


class RecordingTarget(LocalFileTarget):
    """A real sparse file that remembers which bytes were written before each ``sync``."""

    def __init__(self, path: Path, size: int, *, survives: bool) -> None:
        super().__init__(path, size)
        self.writes_survive_exit = survives
        self.written = RangeSet()
        self.synced: list[Range] = []
        self.syncs = 0
        self._lock = threading.Lock()

    def write_view(self, offset: int, view: memoryview) -> None:
        super().write_view(offset, view)
        with self._lock:
            self.written.add(offset, len(view))

    def sync(self) -> None:
        with self._lock:
            ranges = self.written.ranges()
        super().sync()
        self.synced = ranges
        self.syncs += 1


class CheckingFile(CheckpointFile):
    """Fails the copy if a save claims, as synced, a data byte that was not synced before it."""

    def __init__(self, path: Path, target: RecordingTarget, data: list[Range]) -> None:
        super().__init__(path, "work")
        self.target, self.data = target, data
        self.fast_saves = 0

    def stage(self, synced: list[Range], written: list[Range], *, durable: bool) -> Path:
        claimed_data = subtract(self.data, subtract(self.data, synced))  # the data bytes it claims
        missing = subtract(claimed_data, self.target.synced)
        assert not missing, f"claims {missing} as synced before they were synced"
        if not durable:
            self.fast_saves += 1
        return super().stage(synced, written, durable=durable)


@pytest.mark.parametrize("survives", [True, False])
async def test_synced_claims_never_name_bytes_written_after_the_last_sync(
    disk: DiskFactory, tmp_path: Path, survives: bool
) -> None:
    data = [(0, 6 * MiB), (20 * MiB, 6 * MiB)]
    src = disk(size=32 * MiB, runs=data)
    source = RawFileSource(src)
    target = RecordingTarget(tmp_path / "dst.raw", source.size, survives=survives)
    file = CheckingFile(tmp_path / "dst.raw.checkpoint", target, data)
    durable = Checkpointer(file, sync_every=0.0)  # a renewal whenever none is in flight
    try:
        await copy_disk(source, target, chunk_size=256 * 1024, lanes=LANES, durable=durable,
                        bandwidth_limit=64 * MiB)
    finally:
        source.close()
        target.close()
    assert durable.renewals >= 2 and target.syncs >= durable.renewals
    # A target whose writes die with the process (qemu-nbd) gets no same-boot claims.
    assert (file.fast_saves > 0) is survives
    saved = file.load()
    assert saved is not None and total(subtract(data, saved.ranges)) == 0


class HeldSync(LocalFileTarget):
    """A target whose ``sync`` waits while ``held`` is clear: a slow fdatasync on a loaded host."""

    def __init__(self, path: Path, size: int) -> None:
        super().__init__(path, size)
        self.held = threading.Event()
        self.held.set()
        self.syncing = threading.Event()

    def sync(self) -> None:
        self.syncing.set()
        self.held.wait(30)
        super().sync()


async def test_a_renewal_that_synced_while_offers_went_on_never_takes_their_claims_back(tmp_path: Path) -> None:
    """The CI failure of 2026-12-05: a renewal took its claim, synced for longer than a batch, then
    installed its file over the next batch's, whose progress had already been reported."""
    target = HeldSync(tmp_path / "dst.raw", 8 * MiB)
    file = CheckpointFile(tmp_path / "dst.raw.checkpoint", "work")
    durable = Checkpointer(file, sync_every=0.0)
    try:
        await durable.begin(target, [])
        target.held.clear()
        target.syncing.clear()
        await durable.offer([(0, MiB)])  # starts a renewal of (0, 1 MiB), which waits in its sync
        assert await asyncio.to_thread(target.syncing.wait, 10)
        await durable.offer([(0, 2 * MiB)])  # the next batch, while that renewal syncs
        saved = file.load()
        assert saved is not None and saved.ranges == [(0, 2 * MiB)]
        target.held.set()
        for _ in range(1000):  # the renewal's end, before any finish() could paper over it
            if durable.renewals == 2:
                break
            await asyncio.sleep(0.01)
        assert durable.renewals == 2
        saved = file.load()
        assert saved is not None and saved.ranges == [(0, 2 * MiB)], saved
        assert json.loads(file.path.read_text())["synced"] == [[0, MiB]]  # what the renewal synced, no more
    finally:
        target.held.set()
        target.close()


def test_written_claims_hold_only_on_the_boot_that_wrote_them(tmp_path: Path) -> None:
    file = CheckpointFile(tmp_path / "c", "work")
    file.save([(0, 10)], [(0, 50)], durable=False)
    saved = file.load()
    assert saved is not None and saved.ranges == [(0, 50)] and saved.same_boot
    data = json.loads(file.path.read_text())
    assert data["boot"] == boot_id() != ""
    file.path.write_text(json.dumps({**data, "boot": "another-boot"}))
    after_reboot = file.load()
    assert after_reboot is not None and after_reboot.ranges == [(0, 10)] and not after_reboot.same_boot


def test_a_file_for_other_work_or_torn_claims_nothing(tmp_path: Path) -> None:
    CheckpointFile(tmp_path / "c", "export snap-1 disk-0").save([(0, 10)], [(0, 50)], durable=True)
    other = CheckpointFile(tmp_path / "c", "export snap-2 disk-0").load()
    assert other is not None and other.ranges == [] and not other.same_boot
    (tmp_path / "c").write_text('{"key": "export snap-1 disk-0", "synced": [[0, 1')
    torn = CheckpointFile(tmp_path / "c", "export snap-1 disk-0").load()
    assert torn is not None and torn.ranges == []
    assert CheckpointFile(tmp_path / "missing", "x").load() is None


async def test_a_stale_file_is_replaced_before_the_first_write_to_a_new_target(
    disk: DiskFactory, tmp_path: Path
) -> None:
    src = disk(size=16 * MiB, runs=[(0, 8 * MiB)])
    file = CheckpointFile(tmp_path / "dst.raw.checkpoint", "work")
    file.save([(0, 16 * MiB)], [], durable=True)  # left by an attempt whose target is gone
    source = RawFileSource(src)
    target = LocalFileTarget(tmp_path / "dst.raw", source.size)  # new: nothing an attempt wrote
    seen: list[TransferProgress] = []

    async def stop_at_first(p: TransferProgress) -> None:
        seen.append(p)
        raise asyncio.CancelledError

    saved = file.load()
    assert saved is not None
    try:
        with pytest.raises(asyncio.CancelledError):
            await copy_disk(source, target, checkpoint=saved.ranges, chunk_size=MiB, lanes=1,
                            on_progress=stop_at_first, durable=Checkpointer(file))
    finally:
        source.close()
        target.close()
    after = file.load()
    assert after is not None and total(after.ranges) < 16 * MiB
    assert not subtract(after.ranges, seen[0].checkpoint), "the file claims more than was copied"


async def test_a_killed_replica_sync_resumes_from_its_last_batch(tmp_path: Path) -> None:
    size, chunk = 8 * MiB, 64 * 1024
    src, dst = tmp_path / "src.raw", tmp_path / "replica.raw"
    src.write_bytes(os.urandom(size))
    file = CheckpointFile(tmp_path / "replica.checkpoint", "replica")
    stop_at = size * 9 // 10
    reported: list[int] = []

    async def dies_at_90(done: int, _total: int) -> None:
        reported.append(done)
        if done >= stop_at:
            raise asyncio.CancelledError  # as a kill would: nothing after the report runs

    source, target = RawFileSource(src), LocalFileTarget(dst, size)
    with pytest.raises(asyncio.CancelledError):
        await sync_replica(source, target, None, chunk_size=chunk, digest_size=16, on_progress=dies_at_90,
                           batch_chunks=8, durable=Checkpointer(file))
    target.close()
    saved = file.load()
    assert saved is not None and saved.ranges and saved.ranges[0][0] == 0
    resume = saved.ranges[0][1]
    assert resume >= reported[-1]  # the file is never behind the last report
    target = LocalFileTarget(dst, size)
    again = await sync_replica(source, target, None, chunk_size=chunk, digest_size=16,
                               on_progress=_ignore, resume_from=resume)
    source.close()
    target.close()
    assert again.bytes_read <= size - reported[-1]
    assert dst.read_bytes() == src.read_bytes()


async def _ignore(_done: int, _total: int) -> None:
    return None


def test_remove_leaves_nothing(tmp_path: Path) -> None:
    file = CheckpointFile(tmp_path / "d.checkpoint", "k")
    file.save([], [(0, 1)], durable=False)
    file.save([(0, 1)], [(0, 1)], durable=True)
    file.remove()
    assert list(tmp_path.iterdir()) == []
