"""Real disk images on the local filesystem, built with plain file writes."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

MiB = 1024 * 1024

DiskFactory = Callable[..., Path]


def write_image(
    path: Path,
    size: int,
    runs: list[tuple[int, int]] = (),  # type: ignore[assignment]
    small_writes: int = 0,
    seed: int = 0,
) -> Path:
    """A sparse raw file of ``size`` bytes with random data in ``runs`` and scattered 4 KiB writes."""
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off, length in runs:
            f.seek(off)
            f.write(rnd.randbytes(length))
        for _ in range(small_writes):
            f.seek(rnd.randrange(0, size - 4096) // 4096 * 4096)
            f.write(rnd.randbytes(4096))
    return path


@pytest.fixture
def disk(tmp_path: Path) -> DiskFactory:
    """Factory: ``disk(name, size, runs=[...], small_writes=N, seed=S)`` -> path of a raw image."""

    def make(name: str = "src.raw", size: int = 64 * MiB, **kw: object) -> Path:
        return write_image(tmp_path / name, size, **kw)  # type: ignore[arg-type]

    return make


def _same_bytes(a: Path, b: Path) -> bool:
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(MiB), fb.read(MiB)
            if x != y:
                return False
            if not x:
                return True


@pytest.fixture
def same_bytes() -> Callable[[Path, Path], bool]:
    """Byte-for-byte equality of two files, read in 1 MiB pieces."""
    return _same_bytes
