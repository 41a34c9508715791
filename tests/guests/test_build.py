"""Every variant of the Debian test guest builds from an empty cache, with GRUB on the guest's own disk.

The builds themselves run in the background from the session's start (``tests/guests/debian.py``);
these tests read what they produced. The checks are what any BIOS/GPT GRUB install leaves, read with
host tools: the MBR's boot code and the sector it loads, GRUB's core image in the BIOS boot partition,
and a ``grub.cfg`` that boots the root filesystem by UUID.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from devstack.guest import ROOT_START_SECTOR, recipe
from tests.guests.debian import ROOT_UUID, from_empty

# guest_builds: under xdist, this worker's first TCG test starts the builds
pytestmark = [pytest.mark.slow, pytest.mark.tcg, pytest.mark.usefixtures("guest_builds")]
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
#: boot.img keeps the LBA of core.img's first sector here (GRUB_BOOT_MACHINE_KERNEL_SECTOR)
KERNEL_SECTOR_OFFSET = 0x5C


@pytest.mark.parametrize("cloud_init", [False, True], ids=["plain", "cloud-init"])
def test_variant_builds_from_an_empty_cache(cloud_init: bool) -> None:
    disk = from_empty[cloud_init].result(timeout=3600)
    assert json.loads((disk.parent / "recipe.json").read_text()) == json.loads(json.dumps(recipe(cloud_init)))

    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], capture_output=True, check=True,
                                      text=True).stdout)["partitiontable"]
    assert table["label"] == "gpt"
    bios, root = table["partitions"]
    assert bios["type"] == BIOS_BOOT and root["start"] == ROOT_START_SECTOR

    with open(disk, "rb") as fh:
        mbr = fh.read(512)
        fh.seek(bios["start"] * 512)
        core = fh.read(512)
    assert mbr[510:] == b"\x55\xaa" and b"GRUB" in mbr[:440], "no GRUB boot code in the MBR"
    # The MBR's boot code loads the first sector of the BIOS boot partition: GRUB went to *this* disk.
    assert int.from_bytes(mbr[KERNEL_SECTOR_OFFSET:KERNEL_SECTOR_OFFSET + 8], "little") == bios["start"]
    assert core.strip(b"\0"), "the BIOS boot partition holds no core image"

    cfg = _read_root_file(disk, "/boot/grub/grub.cfg")
    assert f"root=UUID={ROOT_UUID}" in cfg and "console=ttyS0" in cfg, cfg[-2000:]


def _read_root_file(disk: Path, path: str) -> str:
    """Read a file of the root filesystem with debugfs, at the partition's offset (no mount, no appliance)."""
    image = f"{disk}?offset={ROOT_START_SECTOR * 512}"
    proc = subprocess.run(["debugfs", "-R", f"cat {path}", image], capture_output=True, text=True, check=True)
    return proc.stdout
