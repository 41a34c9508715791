"""Guest disk images for the vSphere tests, and the copy loop standing in for the disk engine."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from devstack.guest import export_stream_optimized_vmdk
from diskio.base import DiskSource

MiB = 1024 * 1024


def make_guest_disk(path: Path, size: int, seed: int) -> None:
    """A raw disk with a few scattered data areas (a stand-in for a guest's filesystem)."""
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in (0, size // 4 + 4096, size // 2, size - 3 * 65536):
            f.seek(offset)
            f.write(rnd.randbytes(150_000 if offset < size - 3 * 65536 else 3 * 65536))


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def to_stream_optimized(raw: Path, vmdk: Path) -> None:
    """``raw`` as the streamOptimized VMDK vSphere exports (one recipe, in ``devstack.guest``)."""
    export_stream_optimized_vmdk(raw, vmdk)


def copy_extents(src: DiskSource, dst: Path, chunk: int = 4 * MiB) -> int:
    """Stand-in for ``diskio.copier.copy_disk``: copy only ``src.extents()``; return bytes copied."""
    moved = 0
    mode = "r+b" if dst.exists() else "wb"
    with open(dst, mode) as f:
        f.truncate(src.size)
        for extent in src.extents():
            offset = extent.offset
            while offset < extent.end:
                data = src.read(offset, min(chunk, extent.end - offset))
                f.seek(offset)
                f.write(data)
                offset += len(data)
                moved += len(data)
    return moved


def images_identical(a: Path, b: Path, fmt_b: str = "raw") -> bool:
    result = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "raw", "-F", fmt_b, str(a), str(b)],
        check=False,
        capture_output=True,
    )
    return result.returncode == 0
