"""The demo's sample disk (``devstack.sample``): its root filesystem fits the partition sfdisk made.

A filesystem that claims more blocks than its partition holds mounts, then fails (or corrupts the
backup GPT) once something writes near its end; e2fsck and the kernel both refuse it on a strict day.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

from devstack.sample import ROOT_START, SECTOR, build_disk


def test_root_filesystem_ends_inside_its_partition(tmp_path: Path) -> None:
    disk = tmp_path / "sample.raw"
    build_disk(disk, size=256 * 1024**2, data_mib=1)
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]["partitions"][0]
    assert table["start"] == ROOT_START
    with open(disk, "rb") as f:  # the ext4 superblock sits 1 KiB into the filesystem
        f.seek(ROOT_START * SECTOR + 1024)
        sb = f.read(64)
    blocks, log_block = struct.unpack_from("<I", sb, 4)[0], struct.unpack_from("<I", sb, 24)[0]
    assert struct.unpack_from("<H", sb, 56)[0] == 0xEF53  # ext2/3/4 magic
    assert blocks * (1024 << log_block) <= table["size"] * SECTOR
