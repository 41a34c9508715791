"""Raw file source and sparse file target."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xxhash

from diskio import digest
from diskio.base import DiskTarget, Extent
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


def test_target_compares_its_writes_in_place(tmp_path: Path) -> None:
    path = tmp_path / "t.raw"
    dst = LocalFileTarget(path, 32 * MiB)
    data = bytearray(os.urandom(3 * MiB))
    dst.write_view(MiB, memoryview(data))
    dst.write_view(9 * MiB, memoryview(data))  # past the first compare window (8 MiB from 1 MiB)
    scratch = bytearray(b"\xff" * (3 * MiB))
    assert dst.matches(MiB, memoryview(data), scratch)
    assert dst.matches(9 * MiB + 5, memoryview(data)[5:], scratch)
    # the file changed behind the target's back (another descriptor): the pages themselves are compared
    with open(path, "r+b") as other:
        other.seek(MiB + 2 * MiB + 7)
        other.write(bytes([data[2 * MiB + 7] ^ 1]))
    assert not dst.matches(MiB, memoryview(data), scratch)
    assert dst.matches(MiB, memoryview(data)[: 2 * MiB], scratch)
    assert scratch == b"\xff" * (3 * MiB)  # nothing was read back into the buffer
    dst.close()


def test_target_hashes_its_pages_in_place(tmp_path: Path) -> None:
    path = tmp_path / "t.raw"
    dst = LocalFileTarget(path, 32 * MiB)
    data = bytes(os.urandom(3 * MiB))
    dst.write(7 * MiB, data)  # across the first hash window (8 MiB from 7 MiB)
    buf = bytearray(b"\xff" * MiB)

    def held(offset: int, length: int) -> str:
        h = digest.new()
        dst.feed(offset, length, h.update, buf)
        return h.digest().hex()

    assert held(7 * MiB, 3 * MiB) == xxhash.xxh3_128(data).hexdigest()
    assert held(7 * MiB + 5, MiB) == xxhash.xxh3_128(data[5 : MiB + 5]).hexdigest()
    with open(path, "r+b") as other:  # changed through another descriptor: the pages themselves are hashed
        other.seek(9 * MiB + 3)
        other.write(bytes([data[2 * MiB + 3] ^ 1]))
    assert held(7 * MiB, 3 * MiB) != xxhash.xxh3_128(data).hexdigest()
    assert buf == b"\xff" * MiB  # nothing was read back into the buffer
    # past the written end: read back (a mapped page there would raise SIGBUS), zeros inside the disk
    assert held(12 * MiB, 2 * MiB) == xxhash.xxh3_128(bytes(2 * MiB)).hexdigest()
    dst.close()


def test_target_reads_back_what_lies_past_its_written_end(tmp_path: Path) -> None:
    # Mapped pages past a file's end raise SIGBUS (the process would die): the target reads those back.
    dst = LocalFileTarget(tmp_path / "t.raw", 32 * MiB)
    dst.write(0, b"x" * MiB)
    scratch = bytearray(b"\xff" * MiB)
    zeros = memoryview(bytearray(MiB))
    assert dst.matches(4 * MiB, zeros, scratch)
    assert scratch == bytes(MiB)  # read back: zeros past the physical end, inside the disk
    assert not dst.matches(MiB - 10, zeros[:20], scratch)
    dst.close()


def test_a_target_that_reads_back_compares_more_than_its_scratch_holds(tmp_path: Path) -> None:
    dst = LocalFileTarget(tmp_path / "t.raw", 8 * MiB)
    data = bytearray(os.urandom(3 * MiB + 5))
    dst.write_view(0, memoryview(data))
    scratch = bytearray(MiB)
    # DiskTarget's own comparison (the one every target that cannot lend its pages uses)
    assert DiskTarget.matches(dst, 0, memoryview(data), scratch)
    data[3 * MiB + 2] ^= 1  # in the last, short piece
    assert not DiskTarget.matches(dst, 0, memoryview(data), scratch)
    dst.close()
