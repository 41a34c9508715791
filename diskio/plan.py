"""Cutting a disk's allocated extents into the chunks the copier moves.

The cut depends only on the source's extents, the target's block and the chunk size, so
that an attempt that resumes sees the same chunks, and the per-disk digest (a hash over
the chunks' hashes, in disk order) means the same thing on every attempt and both sides.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from diskio import digest
from diskio.base import Extent
from diskio.ranges import Range, merge


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


def target_block(alignment: int, granularity: int) -> int:
    """The unit that every write must start at and cover: both constraints at once."""
    big, small = max(alignment, granularity), min(alignment, granularity)
    if big % small:
        raise ValueError(f"alignment {alignment} and granularity {granularity} do not nest")
    return big


def align_extents(extents: Iterable[Extent], size: int, block: int) -> list[Range]:
    """Round extents outward to ``block`` (clipped to the disk's end) and merge them."""
    out: list[Range] = []
    for ext in extents:
        start = ext.offset // block * block
        end = min(size, -(-ext.end // block) * block)
        if end > start:
            out.append((start, end - start))
    return merge(out)


def cut_chunks(ranges: Iterable[Range], chunk_size: int) -> list[Chunk]:
    """Split ranges on the absolute ``chunk_size`` grid, so chunks never straddle a grid line."""
    chunks: list[Chunk] = []
    for off, length in ranges:
        pos, end = off, off + length
        while pos < end:
            stop = min(end, (pos // chunk_size + 1) * chunk_size)
            chunks.append(Chunk(len(chunks), pos, stop - pos))
            pos = stop
    return chunks


class DiskDigest:
    """The engine's digest over ``(offset, length, digest(chunk bytes))`` of every chunk, in disk order.

    ``hexdigest`` names the algorithm (``"xxh3-128:<hex>"``, see ``diskio.digest``), so a digest
    from another algorithm (a SHA-256-era log) never compares equal by accident.

    Holes outside the allocated extents are not hashed: they read as zeros on both sides.
    Chunk hashes may arrive out of order; they are fed in order through a small buffer
    bounded by the number of chunks in flight.
    """

    def __init__(self) -> None:
        self._hash = digest.new()
        self._next = 0
        self._waiting: dict[int, tuple[Chunk, bytes]] = {}

    def add(self, chunk: Chunk, sha: bytes) -> None:
        self._waiting[chunk.index] = (chunk, sha)
        while self._next in self._waiting:
            c, s = self._waiting.pop(self._next)
            self._hash.update(struct.pack("<QQ", c.offset, c.length) + s)
            self._next += 1

    def hexdigest(self, expected_chunks: int) -> str:
        if self._next != expected_chunks:
            raise RuntimeError(f"digest covers {self._next} of {expected_chunks} chunks")
        return digest.tag(self._hash.digest().hex())
