"""The benchmark disk: 4 GiB raw, 1 GiB of random data in 4 runs, plus scattered small writes."""

from __future__ import annotations

import os
import random
from pathlib import Path

GiB = 1 << 30
MiB = 1 << 20
RUN = 256 * MiB
SMALL_WRITES = 256  # 4 KiB each, scattered over the whole disk


def build(path: Path, size: int = 4 * GiB, seed: int = 42, run: int = RUN) -> Path:
    """Write the image once; reuse it when a marker says it has this layout already."""
    marker = path.with_suffix(".layout")
    layout = f"{size} {run} x4 {SMALL_WRITES} seed={seed}\n"
    if path.exists() and marker.exists() and marker.read_text() == layout:
        return path
    rnd = random.Random(seed)
    # 4 runs at evenly spaced offsets (0, 1, 2, 3 GiB on the 4 GiB disk)
    runs = [i * (size // 4) for i in range(4)]
    with open(path, "wb") as f:
        f.truncate(size)
        for off in runs:
            f.seek(off)
            for _ in range(run // (16 * MiB)):
                f.write(os.urandom(16 * MiB))
        for _ in range(SMALL_WRITES):
            f.seek(rnd.randrange(0, size - 4096) // 4096 * 4096)
            f.write(os.urandom(4096))
    marker.write_text(layout)
    return path


def allocated(path: Path) -> int:
    """Bytes in the file's data extents (SEEK_DATA/SEEK_HOLE)."""
    from diskio.local import RawFileSource

    src = RawFileSource(path)
    try:
        return sum(e.length for e in src.extents())
    finally:
        src.close()
