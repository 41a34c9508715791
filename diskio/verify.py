"""An after-the-fact check: the per-disk digest computed from both sides, independently.

``copy_disk`` already compares every chunk it writes; this reads the source and the target
again (for instance before a long-lived disk is handed over) and names the chunks that
differ, so that they can be copied again with ``copy_disk(checkpoint=...)``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass, field

from diskio import digest
from diskio.base import DiskSource, DiskTarget
from diskio.copier import DEFAULT_CHUNK_SIZE, DEFAULT_LANES
from diskio.plan import Chunk, DiskDigest, align_extents, cut_chunks, target_block
from diskio.ranges import Range, subtract


@dataclass
class DigestCheck:
    """Result of ``compare_digests``: both per-disk digests and the chunks that differ."""

    source_digest: str
    target_digest: str
    mismatched: list[Range] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.source_digest == self.target_digest and not self.mismatched

    def checkpoint(self, size: int) -> list[Range]:
        """Done ranges that make ``copy_disk`` copy exactly the mismatched chunks again."""
        return subtract([(0, size)], self.mismatched)


def _hasher(readinto: Callable[[int, memoryview], int]) -> Callable[[Chunk], bytes]:
    def sha(chunk: Chunk) -> bytes:
        buf = bytearray(chunk.length)
        if readinto(chunk.offset, memoryview(buf)) != chunk.length:
            raise OSError(f"short read at {chunk.offset}")
        hasher = digest.new()
        hasher.update(buf)
        return hasher.digest()

    return sha


async def compare_digests(
    source: DiskSource,
    target: DiskTarget,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    lanes: int = DEFAULT_LANES,
) -> DigestCheck:
    """Hash every allocated chunk of the source and of the target; compare them.

    Uses the same chunking as ``copy_disk`` with the same ``chunk_size``, so the digests
    equal ``CopyResult.digest``.
    """
    if not target.readable:
        raise ValueError("the target cannot be read back")
    block = target_block(target.alignment, target.granularity)
    chunk_size = max(block, chunk_size // block * block)
    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(lanes, thread_name_prefix="diskio-verify") as pool:
        extents = await loop.run_in_executor(pool, source.extents)
        chunks = cut_chunks(align_extents(extents, source.size, block), chunk_size)
        src_sha, dst_sha = _hasher(source.readinto), _hasher(target.readinto)
        src_digest, dst_digest = DiskDigest(), DiskDigest()
        mismatched: list[Range] = []
        # Bounded batches keep memory at about 2 x lanes x chunk_size.
        for start in range(0, len(chunks), lanes):
            batch = chunks[start : start + lanes]
            a_shas = [loop.run_in_executor(pool, src_sha, c) for c in batch]
            b_shas = [loop.run_in_executor(pool, dst_sha, c) for c in batch]
            pairs = zip(await asyncio.gather(*a_shas), await asyncio.gather(*b_shas), strict=True)
            for chunk, (a, b) in zip(batch, pairs, strict=True):
                src_digest.add(chunk, a)
                dst_digest.add(chunk, b)
                if a != b:
                    mismatched.append((chunk.offset, chunk.length))
    return DigestCheck(src_digest.hexdigest(len(chunks)), dst_digest.hexdigest(len(chunks)), mismatched)
