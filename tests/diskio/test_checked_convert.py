"""qemu-img convert verified with the engine's digest: a clean conversion, and a damaged image repaired."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from pathlib import Path

from diskio.base import DiskSource
from diskio.checked_convert import chunk_digests, convert_verified, verify_and_repair
from diskio.convert import convert_image
from diskio.copier import copy_disk
from diskio.imagemap import open_mapped
from diskio.local import LocalFileTarget, RawFileSource
from diskio.plan import align_extents, cut_chunks

MiB = 1024 * 1024
CHUNK = MiB


def identical(raw: Path, image: Path) -> bool:
    cmd = ["qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", str(raw), str(image)]
    return subprocess.run(cmd, check=False).returncode == 0


async def test_convert_verified_gives_the_copiers_digest(disk: Callable[..., Path], tmp_path: Path) -> None:
    src = disk(size=24 * MiB, runs=[(0, 3 * MiB), (12 * MiB, 2 * MiB)], small_writes=8, seed=4)
    dst = tmp_path / "out.qcow2"
    result = await convert_verified(src, "raw", dst, "qcow2", chunk_size=CHUNK)
    assert result.verified and result.repairs == 0 and identical(src, dst)
    source, target = RawFileSource(src), LocalFileTarget(tmp_path / "copy.raw", 24 * MiB)
    try:
        copied = await copy_disk(source, target, chunk_size=CHUNK)
    finally:
        source.close()
        target.close()
    assert result.digest == copied.digest


async def test_a_damaged_chunk_of_the_converted_image_is_caught_and_copied_again(
    disk: Callable[..., Path], tmp_path: Path
) -> None:
    src = disk(size=16 * MiB, runs=[(0, 4 * MiB)], seed=6)
    dst = tmp_path / "out.qcow2"
    await convert_image(src, "raw", dst, "qcow2")
    # Damage inside the data, as a faulty write path would: one 4 KiB block in the third chunk.
    damage = ["qemu-io", "-f", "qcow2", "-c", f"write -P 0x55 {2 * MiB + 8192} 4k", str(dst)]
    await asyncio.to_thread(subprocess.run, damage, check=True, capture_output=True)
    assert not identical(src, dst)
    source = RawFileSource(src)
    chunks = cut_chunks(align_extents(source.extents(), source.size, 512), CHUNK)
    try:
        result = await verify_and_repair(source, dst, "qcow2", chunks, await chunk_digests(source, chunks),
                                         chunk_size=CHUNK)
    finally:
        source.close()
    assert result.repairs == 1 and result.verified
    assert identical(src, dst)


async def test_a_compressed_image_is_not_read_in_place_but_still_verified(
    disk: Callable[..., Path], tmp_path: Path
) -> None:
    src = disk(size=8 * MiB)
    with src.open("r+b") as f:  # compressible data: random data would be stored uncompressed
        f.seek(MiB)
        f.write((b"sterna disk engine " * (2 * MiB // 19 + 1))[: 2 * MiB])
    dst = tmp_path / "out.qcow2"
    result = await convert_verified(src, "raw", dst, "qcow2", options=["-c"], chunk_size=CHUNK)
    # compressed clusters have no host offset to read: the check went through qemu-nbd
    assert open_mapped(dst, "qcow2") is None
    assert result.verified and result.repairs == 0 and result.bytes_verified == 2 * MiB
    assert identical(src, dst)


def collect(side: DiskSource, offset: int, length: int, piece: int) -> list[bytes]:
    pieces: list[bytes] = []
    side.feed(offset, length, lambda view: pieces.append(bytes(view)), bytearray(piece))
    return pieces


async def test_an_image_read_in_place_lends_the_same_bytes_as_it_reads(
    disk: Callable[..., Path], tmp_path: Path
) -> None:
    # feed (views of mapped pages, no copy) and readinto (pread) must agree, holes and odd offsets included
    src = disk(size=16 * MiB, runs=[(MiB, 3 * MiB), (9 * MiB, MiB)], small_writes=6, seed=7)
    dst = tmp_path / "out.qcow2"
    await convert_image(src, "raw", dst, "qcow2")
    image, raw = open_mapped(dst, "qcow2"), RawFileSource(src)
    assert image is not None
    try:
        for side in (image, raw):
            for offset, length in ((0, 16 * MiB), (MiB - 4096 + 3, 8 * MiB + 11), (9 * MiB + 1, 5)):
                pieces = collect(side, offset, length, 64 * 1024)
                assert all(len(p) <= 64 * 1024 for p in pieces)
                assert b"".join(pieces) == raw.read(offset, length)
    finally:
        image.close()
        raw.close()
