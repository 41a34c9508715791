"""The sparse VMDK reader against images written by qemu-img (streamOptimized, monolithicSparse)."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from core.errors import InvalidInput
from providers.vsphere.vmdk import SparseVmdk
from tests.providers.vsphere.staging import MiB, make_guest_disk


class FileReader:
    """A local file as a RangeReader, counting what is read."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size
        self.bytes_read = 0

    def read_at(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        os.close(self._fd)


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vmdk") / "guest.raw"
    make_guest_disk(path, 20 * MiB + 512 * 3, seed=7)  # not a whole number of grains
    return path


@pytest.mark.parametrize("subformat", ["streamOptimized", "monolithicSparse"])
def test_reads_match_the_raw_image(raw: Path, tmp_path: Path, subformat: str) -> None:
    vmdk = tmp_path / "disk.vmdk"
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            f"subformat={subformat}",
            str(raw),
            str(vmdk),
        ],
        check=True,
    )
    expected = raw.read_bytes()
    reader = FileReader(vmdk)
    try:
        disk = SparseVmdk(reader)
        assert disk.size == len(expected)
        assert disk.read(0, disk.size + 4096) == expected  # short only at the end of the disk
        rnd = random.Random(1)
        for _ in range(100):
            offset, length = rnd.randrange(disk.size), rnd.randrange(1, 300_000)
            assert disk.read(offset, length) == expected[offset : offset + length]
        # allocated grains cover every non-zero byte, and are far less than the disk
        covered = bytearray(len(expected))
        for e in disk.extents():
            covered[e.offset : e.end] = expected[e.offset : e.end]
        assert bytes(covered) == expected
        assert sum(e.length for e in disk.extents()) < 2 * MiB
        # reading one grain fetches about one grain, not the file
        reader.bytes_read = 0
        disk.read(disk.size // 2, 4096)
        assert reader.bytes_read <= 66 * 1024
    finally:
        reader.close()


def test_unallocated_disk_has_no_extents(tmp_path: Path) -> None:
    vmdk = tmp_path / "empty.vmdk"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", str(vmdk), "8M"],
        check=True,
    )
    reader = FileReader(vmdk)
    try:
        disk = SparseVmdk(reader)
        assert disk.extents() == []
        assert disk.read(1 * MiB, 100) == bytes(100)
        assert disk.size == 8 * MiB
    finally:
        reader.close()


def test_not_a_vmdk_is_invalid_input(raw: Path) -> None:
    reader = FileReader(raw)
    try:
        with pytest.raises(InvalidInput, match="not a sparse VMDK"):
            SparseVmdk(reader)
    finally:
        reader.close()
