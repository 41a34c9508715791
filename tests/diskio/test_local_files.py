"""Raw file source and sparse file target."""

from __future__ import annotations

from pathlib import Path

import pytest

from diskio.base import Extent
from diskio.local import LocalFileTarget, RawFileSource

MiB = 1024 * 1024


def test_source_extents_follow_seek_data(tmp_path: Path) -> None:
    path = tmp_path / "a.raw"
    with open(path, "wb") as f:
        f.truncate(16 * MiB)
        f.seek(4 * MiB)
        f.write(b"x" * MiB)
    src = RawFileSource(path)
    assert src.size == 16 * MiB
    assert src.extents() == [Extent(4 * MiB, MiB)]
    assert src.read(4 * MiB - 2, 4) == b"\0\0xx"
    assert src.read(16 * MiB - 1, 10) == b"\0"  # short only at the end of the disk
    src.close()


def test_new_target_reads_zeros_and_gets_its_size_on_close(tmp_path: Path) -> None:
    path = tmp_path / "t.raw"
    dst = LocalFileTarget(path, 8 * MiB)
    assert dst.zero_initialized and dst.readable
    dst.write(MiB, b"abc")
    assert dst.read(MiB - 1, 5) == b"\0abc\0"
    assert dst.read(7 * MiB, 10) == bytes(10)  # past the physical end, inside the disk
    dst.close()
    assert path.stat().st_size == 8 * MiB
    assert path.stat().st_blocks * 512 <= 64 * 1024  # still sparse


def test_existing_target_is_reopened_without_losing_data(tmp_path: Path) -> None:
    path = tmp_path / "t.raw"
    path.write_bytes(b"keep" + bytes(100))
    dst = LocalFileTarget(path, 4096)
    assert not dst.zero_initialized  # an earlier attempt's bytes may be anywhere
    assert dst.read(0, 4) == b"keep"
    dst.write_zeroes(0, 4096)  # punches a hole: reads as zeros, frees the block
    assert dst.read(0, 4) == bytes(4)
    dst.close()
    assert path.stat().st_size == 4096


def test_target_smaller_than_existing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.raw"
    path.write_bytes(bytes(8192))
    with pytest.raises(ValueError, match="more than"):
        LocalFileTarget(path, 4096)
