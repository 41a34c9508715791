"""Images in qemu formats through qemu-img map and qemu-nbd."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import TransferError
from diskio.copier import copy_disk
from diskio.local import LocalFileTarget, RawFileSource, open_local_source
from diskio.qemu import QemuNbdTarget, qemu_img_map

MiB = 1024 * 1024
DiskFactory = Callable[..., Path]
SameBytes = Callable[[Path, Path], bool]


def convert(src: Path, fmt: str, dst: Path, *opts: str) -> None:
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *opts, str(src), str(dst)], check=True)


def identical(a: Path, fa: str, b: Path, fb: str) -> bool:
    cmd = ["qemu-img", "compare", "-q", "-f", fa, "-F", fb, str(a), str(b)]
    return subprocess.run(cmd, check=False).returncode == 0


async def test_qcow2_source_copies_to_identical_raw(
    disk: DiskFactory, tmp_path: Path, same_bytes: SameBytes
) -> None:
    src = disk(runs=[(2 * MiB, 5 * MiB), (30 * MiB, 3 * MiB)], small_writes=10)
    convert(src, "qcow2", tmp_path / "a.qcow2")
    source = open_local_source(tmp_path / "a.qcow2", "qcow2")
    target = LocalFileTarget(tmp_path / "out.raw", source.size)
    try:
        result = await copy_disk(source, target, chunk_size=MiB, lanes=3)
    finally:
        source.close()
        target.close()
    assert same_bytes(src, tmp_path / "out.raw")
    # qcow2 clusters are 64 KiB, so the map may over-approximate, but never by much here.
    allocated = sum(e.length for e in RawFileSource(src).extents())
    assert allocated <= result.bytes_read <= allocated + 10 * 64 * 1024


def test_fixed_vhd_map_has_the_virtual_size_and_no_footer(disk: DiskFactory, tmp_path: Path) -> None:
    src = disk(runs=[(0, MiB)])
    convert(src, "vpc", tmp_path / "a.vhd", "-o", "subformat=fixed,force_size=on")
    source = open_local_source(tmp_path / "a.vhd", "vpc")
    try:
        assert source.size == 64 * MiB
        assert all(e.end <= source.size for e in qemu_img_map(tmp_path / "a.vhd", "vpc"))
    finally:
        source.close()


async def test_raw_to_qcow2_target_over_nbd(disk: DiskFactory, tmp_path: Path) -> None:
    src = disk(runs=[(0, 4 * MiB), (50 * MiB, 2 * MiB)])
    source = RawFileSource(src)
    target = QemuNbdTarget(tmp_path / "out.qcow2", source.size, "qcow2")
    try:
        result = await copy_disk(source, target, chunk_size=MiB, lanes=2)
    finally:
        source.close()
        target.close()
    assert result.verified
    assert identical(src, "raw", tmp_path / "out.qcow2", "qcow2")


def test_a_broken_image_is_reported_with_qemu_nbd_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"not a qcow2 image" * 100)
    with pytest.raises(TransferError, match="qemu-nbd did not start"):
        open_local_source(bad, "qcow2")
