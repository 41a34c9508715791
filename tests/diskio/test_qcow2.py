"""qcow2 images written by the copier (``diskio.qcow2``), judged by qemu-img: ``check`` finds no error
or leak, ``compare`` finds the guest's bytes, ``map`` finds only the data allocated."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from core.errors import TransferError
from diskio.convert import write_qcow2
from diskio.copier import copy_disk
from diskio.local import RawFileSource
from diskio.qcow2 import CLUSTER, Qcow2FileTarget

MiB = 1024 * 1024
GiB = 1024 * MiB
DiskFactory = Callable[..., Path]


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], capture_output=True, text=True, check=False)


def assert_image_of(src: Path, image: Path, fmt: str = "raw") -> list[dict[str, object]]:
    """The image is a sound qcow2 holding the bytes a guest reads from ``src``; its ``qemu-img map``."""
    check = qemu_img("check", "--output=json", "-f", "qcow2", str(image))
    assert check.returncode == 0, check.stdout + check.stderr
    report = json.loads(check.stdout)
    assert report.get("corruptions", 0) == 0 and report.get("leaks", 0) == 0, report
    same = qemu_img("compare", "-f", fmt, "-F", "qcow2", str(src), str(image))
    assert same.returncode == 0, same.stdout + same.stderr
    info = json.loads(qemu_img("info", "--output=json", "-f", "qcow2", str(image)).stdout)
    assert info["virtual-size"] == json.loads(qemu_img("info", "--output=json", "-f", fmt, str(src)).stdout)[
        "virtual-size"]
    mapped: list[dict[str, object]] = json.loads(qemu_img("map", "--output=json", "-f", "qcow2", str(image)).stdout)
    return mapped


def allocated(mapping: list[dict[str, object]]) -> int:
    return sum(int(e["length"]) for e in mapping if e["data"])  # type: ignore[call-overload]


async def test_a_sparse_disk_becomes_a_sound_qcow2_with_only_its_data_allocated(
    disk: DiskFactory, tmp_path: Path
) -> None:
    # Data in two L2 tables' ranges (each maps 512 MiB), runs that start and end mid-cluster, scattered
    # 4 KiB writes, and a virtual size that is not a whole number of clusters.
    size = 1 * GiB + 3 * CLUSTER + 512
    runs = [(0, 3 * MiB), (5 * MiB + 4096, 200 * 1024), (512 * MiB - 96 * 1024, 192 * 1024), (size - 1536, 1536)]
    src = disk(size=size, runs=runs, small_writes=40, seed=7)
    source = RawFileSource(src)
    image = tmp_path / "out.qcow2"
    target = Qcow2FileTarget(image, source.size)
    try:
        result = await copy_disk(source, target, chunk_size=2 * MiB, final_check=True)
    finally:
        source.close()
        target.close()
    assert result.verified and result.target_digest == result.digest
    mapping = assert_image_of(src, image)
    data = sum(n for _, n in runs) + 40 * 4096
    # every data byte is allocated, rounded to clusters; the gigabyte of zeros is not
    assert data <= allocated(mapping) <= data + (len(runs) + 40) * 2 * CLUSTER
    assert result.bytes_written >= data


async def test_a_size_that_is_not_whole_sectors_is_rounded_up_as_qemu_img_does(tmp_path: Path) -> None:
    src = tmp_path / "odd.raw"
    src.write_bytes(os.urandom(1_000_001))
    image, theirs = tmp_path / "odd.qcow2", tmp_path / "theirs.qcow2"
    assert await write_qcow2(src, "raw", image) is not None
    assert qemu_img("convert", "-f", "raw", "-O", "qcow2", str(src), str(theirs)).returncode == 0
    same = qemu_img("compare", "-s", "-f", "qcow2", "-F", "qcow2", str(theirs), str(image))
    assert same.returncode == 0, same.stdout + same.stderr  # -s: the sizes must match too


async def test_an_all_zero_disk_allocates_no_cluster(disk: DiskFactory, tmp_path: Path) -> None:
    src = disk(size=40 * MiB, runs=[(MiB, 4 * MiB)])
    with open(src, "r+b") as f:  # allocated on the file system, but zeros: the copier skips it
        f.seek(MiB)
        f.write(bytes(4 * MiB))
    source, image = RawFileSource(src), tmp_path / "zero.qcow2"
    target = Qcow2FileTarget(image, source.size)
    result = await copy_disk(source, target, chunk_size=MiB)
    source.close()
    target.close()
    assert result.bytes_written == 0
    assert allocated(assert_image_of(src, image)) == 0


class DamagingQcow2(Qcow2FileTarget):
    """A real qcow2 target whose write at ``bad_offset`` lands with a byte flipped, ``times`` times."""

    def __init__(self, path: Path, size: int, bad_offset: int, times: int) -> None:
        super().__init__(path, size)
        self.bad_offset, self.times = bad_offset, times

    def write_view(self, offset: int, view: memoryview) -> None:
        if offset <= self.bad_offset < offset + len(view) and self.times > 0:
            self.times -= 1
            spoiled = bytearray(view)
            spoiled[self.bad_offset - offset] ^= 0xFF
            view = memoryview(spoiled)
        super().write_view(offset, view)


@pytest.mark.parametrize("times", [1, 2])
async def test_a_cluster_damaged_on_write_is_caught_and_written_again(
    disk: DiskFactory, tmp_path: Path, times: int
) -> None:
    src = disk(size=64 * MiB, runs=[(0, 12 * MiB)])
    source, image = RawFileSource(src), tmp_path / "damaged.qcow2"
    target = DamagingQcow2(image, source.size, bad_offset=5 * MiB + 333, times=times)
    try:
        if times == 1:
            result = await copy_disk(source, target, chunk_size=4 * MiB)
            assert result.repairs == 1
        else:  # damaged again when written again: reported, never passed
            with pytest.raises(Exception, match="read back different"):
                await copy_disk(source, target, chunk_size=4 * MiB)
            return
    finally:
        source.close()
        target.close()
    assert_image_of(src, image)


async def test_reads_before_the_flush_see_the_written_bytes_and_zeros_elsewhere(tmp_path: Path) -> None:
    target = Qcow2FileTarget(tmp_path / "t.qcow2", 4 * MiB)
    try:
        payload = os.urandom(CLUSTER + 1024)
        target.write(CLUSTER - 512, payload)
        assert target.read(CLUSTER - 512, len(payload)) == payload
        assert target.read(0, CLUSTER - 512) == bytes(CLUSTER - 512)
        assert target.read(3 * MiB, MiB) == bytes(MiB)
        assert target.matches(CLUSTER - 512, memoryview(bytearray(payload)), bytearray(4096))
        assert not target.matches(3 * MiB, memoryview(bytearray(b"\1" * 4096)), bytearray(4096))
        target.flush()
        with pytest.raises(TransferError, match="after the image was finished"):
            target.write(2 * MiB, b"\1" * 512)
    finally:
        target.close()


def morphed(base: Path, overlay: Path) -> Path:
    """A qcow2 overlay on a raw export, as OS morphing leaves it: data from both layers, and the
    overlay's zeroed and discarded clusters hiding the base's data."""
    assert qemu_img("create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)).returncode == 0
    writes = ["write -P 0x5a 1M 256k", "write -z 4M 1M", "write -P 0x33 40M 3M", "discard 62M 1M",
              "write -P 0x7e 95M 4k"]
    io = subprocess.run(["qemu-io", "-f", "qcow2", *[a for w in writes for a in ("-c", w)], str(overlay)],
                        capture_output=True, text=True, check=False)
    assert io.returncode == 0, io.stderr
    return overlay


async def test_a_morphed_disk_is_flattened_into_a_qcow2_read_in_place(disk: DiskFactory, tmp_path: Path) -> None:
    base = disk(size=96 * MiB, runs=[(0, 20 * MiB), (60 * MiB, 8 * MiB)], small_writes=10, seed=3)
    overlay = morphed(base, tmp_path / "overlay.qcow2")
    progress: list[float] = []

    async def seen(percent: float) -> None:
        progress.append(percent)

    image = tmp_path / "flat.qcow2"
    result = await write_qcow2(overlay, "qcow2", image, on_progress=seen)
    assert result is not None and result.verified and result.repairs == 0
    assert_image_of(overlay, image, "qcow2")
    assert progress and progress[-1] == 100.0 and progress == sorted(progress)
    info = json.loads(qemu_img("info", "--output=json", "-f", "qcow2", str(image)).stdout)
    assert "backing-filename" not in info, "flattened: the new image stands alone"


async def test_a_source_that_cannot_be_read_in_place_is_left_to_qemu_img(disk: DiskFactory, tmp_path: Path) -> None:
    src = disk(size=8 * MiB)
    with src.open("r+b") as f:  # compressible data: random data would be stored uncompressed
        f.write(b"sterna " * (MiB // 7))
    packed = tmp_path / "packed.qcow2"
    assert qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", str(src), str(packed)).returncode == 0
    image = tmp_path / "never.qcow2"
    assert await write_qcow2(packed, "qcow2", image) is None
    assert not image.exists()
