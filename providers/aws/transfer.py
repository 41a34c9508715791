"""A small stand-in for ``diskio.copier.copy_disk`` and ``diskio.local.open_local_source``.

It has the copier's semantics: read the source's extents, write whole target blocks,
skip all-zero blocks, skip ranges already in the checkpoint, and await ``on_progress``
after each block (which heartbeats and raises ``CancelledError`` on cancel). Blocking
I/O runs in threads so the event loop stays free. When ``diskio`` lands, ``import_disk``
swaps ``copy_blocks`` for ``copy_disk`` and ``LocalRawSource`` for ``open_local_source``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InvalidInput
from diskio.base import DiskSource, DiskTarget, Extent
from providers.base import TransferProgress

Range = tuple[int, int]


class LocalRawSource(DiskSource):
    """A local raw image; extents come from SEEK_DATA/SEEK_HOLE so holes are never read."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY)
        self._size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self._size

    def extents(self) -> list[Extent]:
        extents: list[Extent] = []
        pos = 0
        while pos < self._size:
            try:
                start = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                break
            end = os.lseek(self._fd, start, os.SEEK_HOLE)
            extents.append(Extent(start, min(end, self._size) - start))
            pos = end
        return extents

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def merge_ranges(ranges: list[Range]) -> list[Range]:
    """Sorted union of ``(start, end)`` ranges."""
    merged: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def covered(ranges: list[Range], start: int, end: int) -> bool:
    """Whether ``[start, end)`` lies inside one of the merged ``ranges``."""
    return any(s <= start and end <= e for s, e in ranges)


def aligned_blocks(extents: list[Extent], block: int, size: int) -> list[Range]:
    """The ``block``-aligned pieces (clipped to ``size``) that cover ``extents``, each once."""
    seen: set[int] = set()
    out: list[Range] = []
    for ext in extents:
        first = ext.offset // block
        last = (ext.end - 1) // block
        for index in range(first, last + 1):
            if index not in seen:
                seen.add(index)
                out.append((index * block, min((index + 1) * block, size)))
    out.sort()
    return out


@dataclass
class CopyStats:
    """What one copy did, block by block."""

    blocks_total: int = 0
    blocks_written: int = 0
    blocks_zero: int = 0
    blocks_from_checkpoint: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    checkpoint: list[Range] = field(default_factory=list)


async def copy_blocks(
    src: DiskSource,
    dst: DiskTarget,
    *,
    checkpoint: list[Range] | None,
    on_progress: Callable[[TransferProgress], Awaitable[None]],
    bandwidth_limit: int | None = None,
) -> CopyStats:
    """Copy ``src``'s allocated blocks to ``dst``; resumable through ``checkpoint``."""
    if src.size > dst.size:
        raise InvalidInput(f"the source disk ({src.size} bytes) does not fit the target ({dst.size} bytes)")
    block = max(dst.granularity, dst.alignment)
    size = src.size
    pieces = aligned_blocks(await asyncio.to_thread(src.extents), block, size)
    # Checkpoints come back from Temporal heartbeat details as JSON lists, not tuples.
    done = merge_ranges([(int(r[0]), int(r[1])) for r in checkpoint or []])
    stats = CopyStats(blocks_total=len(pieces), bytes_total=sum(e - s for s, e in pieces))
    started = time.monotonic()
    sent = 0
    for start, end in pieces:
        if covered(done, start, end):
            stats.blocks_from_checkpoint += 1
        else:
            data = await asyncio.to_thread(src.read, start, end - start)
            if data.count(0) == len(data):
                stats.blocks_zero += 1
            else:
                await asyncio.to_thread(dst.write, start, data)
                stats.blocks_written += 1
                sent += len(data)
                if bandwidth_limit:
                    # Sleep until the average rate is back under the limit.
                    ahead = sent / bandwidth_limit - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
            done = merge_ranges([*done, (start, end)])
        stats.bytes_done += end - start
        stats.checkpoint = done
        await on_progress(TransferProgress(stats.bytes_done, stats.bytes_total, list(done)))
    return stats


def count_nonzero_blocks(src: DiskSource, ranges: list[Range], block: int) -> int:
    """Non-zero ``block``-sized pieces of ``src`` inside ``ranges``: what an earlier attempt wrote."""
    done = merge_ranges(ranges)
    count = 0
    for start, end in aligned_blocks(src.extents(), block, src.size):
        if covered(done, start, end):
            data = src.read(start, end - start)
            if data.count(0) != len(data):
                count += 1
    return count
