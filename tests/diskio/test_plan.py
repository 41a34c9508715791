"""Cutting extents into chunks, and the step a chunk is moved in."""

from __future__ import annotations

from pathlib import Path

import pytest

from diskio.base import Extent
from diskio.copier import DEFAULT_LANES, pick_lanes
from diskio.lane import io_step
from diskio.local import LocalFileTarget, RawFileSource
from diskio.plan import Chunk, DiskDigest, align_extents, cut_chunks, target_block

KiB, MiB = 1024, 1024 * 1024


def test_extents_are_widened_to_whole_blocks_and_clipped_to_the_disk() -> None:
    extents = [Extent(100, 10), Extent(4096, 1), Extent(10 * MiB - 5, 5)]
    assert align_extents(extents, 10 * MiB, 4096) == [(0, 8192), (10 * MiB - 4096, 4096)]
    # a disk whose size is not a block multiple keeps its short tail
    assert align_extents([Extent(1000, 10)], 1500, 512 * KiB) == [(0, 1500)]


def test_chunks_follow_the_absolute_grid() -> None:
    chunks = cut_chunks([(3 * MiB, 6 * MiB)], 4 * MiB)
    assert [(c.offset, c.length) for c in chunks] == [(3 * MiB, MiB), (4 * MiB, 4 * MiB), (8 * MiB, MiB)]
    assert [c.index for c in chunks] == [0, 1, 2]


def test_alignment_and_granularity_must_nest() -> None:
    assert target_block(512, 512 * KiB) == 512 * KiB
    with pytest.raises(ValueError, match="do not nest"):
        target_block(3000, 4096)


def test_digest_is_independent_of_completion_order() -> None:
    chunks = [Chunk(i, i * MiB, MiB) for i in range(5)]
    shas = [bytes([i]) * 32 for i in range(5)]
    a, b = DiskDigest(), DiskDigest()
    for c, s in zip(chunks, shas, strict=True):
        a.add(c, s)
    for i in (3, 1, 4, 0, 2):
        b.add(chunks[i], shas[i])
    assert a.hexdigest(5) == b.hexdigest(5)
    with pytest.raises(RuntimeError):
        DiskDigest().hexdigest(1)


def test_step_is_the_larger_preference(tmp_path: Path) -> None:
    path = tmp_path / "a.raw"
    path.write_bytes(b"")
    src, dst = RawFileSource(path), LocalFileTarget(tmp_path / "b.raw", 0)
    assert io_step(src, dst, 8 * MiB, 512) == MiB  # local to local: the source lends its pages, 1 MiB steps
    dst.io_size = 0  # a remote target: whole chunks
    assert io_step(src, dst, 8 * MiB, 512) == 8 * MiB
    dst.io_size = 3 * MiB + 1
    assert io_step(src, dst, 8 * MiB, 512 * KiB) == 3 * MiB  # rounded down to whole blocks
    src.close()
    dst.close()


def test_lanes_are_the_endpoints_only_when_both_state_them(tmp_path: Path) -> None:
    path = tmp_path / "a.raw"
    path.write_bytes(b"")
    src, dst = RawFileSource(path), LocalFileTarget(tmp_path / "b.raw", 0)
    assert pick_lanes(src, dst) == 2  # local to local: one lane a core of the bench machine
    dst.lanes = 0  # a remote target: lanes hide its round trips
    assert pick_lanes(src, dst) == DEFAULT_LANES == 4
    src.close()
    dst.close()
