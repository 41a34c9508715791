"""qcow2 persistent dirty bitmaps: writes through qemu are marked, read back through qemu-nbd/nbdinfo."""

from __future__ import annotations

import subprocess
from pathlib import Path

from diskio import bitmaps
from diskio.base import Extent

KiB = 1024


def test_dirty_extents_are_the_areas_written_since_the_bitmap(tmp_path: Path) -> None:
    disk = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 128k", str(disk)], check=True, capture_output=True)
    bitmaps.add_bitmap(disk, "b1")
    assert bitmaps.dirty_extents(disk, "b1") == []
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 2 1M 64k", "-c", "write -P 3 1088k 10k",
                    "-c", "write -P 4 32M 4k", str(disk)], check=True, capture_output=True)
    assert bitmaps.bitmaps(disk) == ["b1"]
    # 64 KiB granularity: the 10 KiB write right after the first run marks the next 64 KiB block.
    assert bitmaps.dirty_extents(disk, "b1") == [Extent(1024 * KiB, 128 * KiB), Extent(32 * 1024 * KiB, 64 * KiB)]
    bitmaps.remove_bitmap(disk, "b1")
    assert bitmaps.bitmaps(disk) == []
