"""The gzip'd oldgnu sparse tar, unpacked by GNU tar and by Python's tarfile."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from diskio.local import RawFileSource
from diskio.sparsetar import SparseTarStream, rechunk

MIB = 1024 * 1024


def _disk(path: Path, size: int, regions: list[tuple[int, int]]) -> bytes:
    with open(path, "wb") as f:
        f.truncate(size)
        for i, (off, n) in enumerate(regions):
            f.seek(off)
            f.write(os.urandom(n // 2) + bytes([i + 1]) * (n - n // 2))
    return path.read_bytes()


@pytest.mark.parametrize("regions", [
    [],  # all hole
    [(0, MIB)],
    # more regions than the header's four entries: extension blocks, and a file ending in data
    [(i * MIB // 2, 16 * 1024) for i in range(30)] + [(15 * MIB, MIB)],
])
def test_gnu_tar_unpacks_identical_sparse_disk(tmp_path: Path, regions: list[tuple[int, int]]) -> None:
    src = tmp_path / "src.raw"
    raw = _disk(src, 16 * MIB, regions)
    source = RawFileSource(src)
    stream = SparseTarStream(source, realsize=32 * MIB)
    tgz = tmp_path / "disk.tar.gz"
    with open(tgz, "wb") as f:
        for chunk in rechunk(stream.chunks(), 256 * 1024):
            f.write(chunk)
    source.close()
    assert stream.output_bytes == tgz.stat().st_size
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "-xSzf", str(tgz), "-C", str(out)], check=True)
    unpacked = out / "disk.raw"
    assert unpacked.stat().st_size == 32 * MIB
    data = unpacked.read_bytes()
    assert data[: len(raw)] == raw and data[len(raw):].count(0) == 16 * MIB
    listing = subprocess.run(["tar", "-tvzf", str(tgz)], capture_output=True, text=True, check=True).stdout
    assert listing.startswith("-rw-r--r--") and "disk.raw" in listing
    with tarfile.open(tgz, "r:gz") as tf:
        [member] = tf.getmembers()
        assert member.name == "disk.raw" and member.issparse() and member.size == 32 * MIB
        reader = tf.extractfile(member)
        assert reader is not None and reader.read(len(raw)) == raw


def test_same_disk_same_stream(tmp_path: Path) -> None:
    src = tmp_path / "src.raw"
    _disk(src, 8 * MIB, [(MIB, MIB)])
    streams = []
    for _ in range(2):
        source = RawFileSource(src)
        streams.append(b"".join(SparseTarStream(source).chunks()))
        source.close()
    assert streams[0] == streams[1]


def test_disks_past_8_gib_use_gnu_base_256_numbers(tmp_path: Path) -> None:
    """Octal tar fields stop at 8 GiB; real disks are larger (GNU tar reads base-256 there)."""
    src = tmp_path / "big.raw"
    with open(src, "wb") as f:
        f.truncate(10 * 1024**3)
        f.seek(9 * 1024**3 + 4096)
        f.write(b"past eight gib" * 100)
    source = RawFileSource(src)
    tgz = tmp_path / "disk.tar.gz"
    with open(tgz, "wb") as f:
        for chunk in SparseTarStream(source).chunks():
            f.write(chunk)
    source.close()
    out = tmp_path / "gnu"
    out.mkdir()
    subprocess.run(["tar", "-xSzf", str(tgz), "-C", str(out)], check=True)
    unpacked = out / "disk.raw"
    assert unpacked.stat().st_size == 10 * 1024**3
    assert unpacked.stat().st_blocks * 512 < 1024 * 1024, "extracted sparse"
    with open(unpacked, "rb") as f:
        f.seek(9 * 1024**3 + 4096)
        assert f.read(1400) == b"past eight gib" * 100
        f.seek(0)
        assert f.read(4096).count(0) == 4096
