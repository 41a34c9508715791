"""A sample VM for the demo and the tests: a real GPT disk with an ext4 root holding a small Linux tree.

Built without root or loop devices: ``sfdisk`` writes the partition table into the image and
``mkfs.ext4 -d`` fills the root filesystem at the partition's offset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SECTOR = 512
ROOT_START = 2048  # sectors: the usual 1 MiB alignment

OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""


def _tree(root: Path, data_mib: int, seed: int) -> None:
    (root / "etc/network").mkdir(parents=True)
    (root / "etc/os-release").write_text(OS_RELEASE)
    (root / "etc/hostname").write_text("sample-vm\n")
    (root / "etc/fstab").write_text("LABEL=rootfs / ext4 errors=remount-ro 0 1\n")
    (root / "etc/network/interfaces").write_text(
        "auto lo\niface lo inet loopback\n\nauto ens192\niface ens192 inet static\n"
        "    address 192.168.10.20/24\n    gateway 192.168.10.1\n"
    )
    for d in ("bin", "boot", "home/demo", "var/log", "var/lib/sample"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "home/demo/README").write_text("This file travelled with its VM.\n")
    # Incompressible application data, so the copy has real bytes to move.
    rnd = __import__("random").Random(seed)
    with open(root / "var/lib/sample/data.bin", "wb") as f:
        for _ in range(data_mib):
            f.write(rnd.randbytes(1024 * 1024))


def build_disk(path: Path, *, size: int = 2 * 1024**3, data_mib: int = 64, seed: int = 1) -> None:
    """A sparse raw GPT disk: partition 1 is an ext4 root filesystem labelled ``rootfs``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["sfdisk", "-q", str(path)], input=f"label: gpt\nstart={ROOT_START}, type=linux\n",
                   text=True, check=True, capture_output=True)
    # sfdisk rounds the partition's end down to its 1 MiB grain: ask it, don't compute it
    table = subprocess.run(["sfdisk", "--json", str(path)], check=True, capture_output=True, text=True).stdout
    root_sectors = json.loads(table)["partitiontable"]["partitions"][0]["size"]
    with tempfile.TemporaryDirectory() as tmp:
        _tree(Path(tmp), data_mib, seed)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", tmp, "-E", f"offset={ROOT_START * SECTOR}",
             str(path), f"{root_sectors * SECTOR // 1024}k"],
            check=True, capture_output=True,
        )


def create_vmware_vm(inventory: Path, name: str, raw_guest: Path | None = None, *, vmdk: Path | None = None) -> Path:
    """A ``local`` entry holding ``raw_guest`` as the streamOptimized VMDK a vSphere export produces.

    ``vmdk`` instead: such an export made before (the tests cache theirs), copied in.
    """
    from devstack.guest import VMWARE_MAC, export_stream_optimized_vmdk

    vm_dir = inventory / name
    vm_dir.mkdir(parents=True, exist_ok=True)
    if vmdk is not None:
        shutil.copyfile(vmdk, vm_dir / "disk-0.vmdk")
    elif raw_guest is not None:
        export_stream_optimized_vmdk(raw_guest, vm_dir / "disk-0.vmdk")
    else:
        raise ValueError("create_vmware_vm needs raw_guest or vmdk")
    vm = {"name": name, "num_cpu": 1, "memory_mb": 1024, "firmware": "BIOS", "os_type": "linux",
          "guest_id": "debian12_64Guest", "nics": [{"network_name": "VM Network", "mac_address": VMWARE_MAC}],
          "disks": [{"id": "disk-0", "file": "disk-0.vmdk", "format": "vmdk"}]}
    (vm_dir / "vm.json").write_text(json.dumps(vm, indent=2) + "\n")
    return vm_dir


def create_vm(inventory: Path, name: str, *, size: int = 2 * 1024**3, data_mib: int = 64, seed: int = 1,
              network: str = "VM Network") -> Path:
    """A ``local`` inventory entry (``vm.json`` + ``disk-0.raw``)."""
    vm_dir = inventory / name
    vm_dir.mkdir(parents=True, exist_ok=True)
    build_disk(vm_dir / "disk-0.raw", size=size, data_mib=data_mib, seed=seed)
    mac = "00:50:56:" + ":".join(f"{b:02x}" for b in os.urandom(3))
    vm = {"name": name, "num_cpu": 1, "memory_mb": 1024, "firmware": "BIOS", "os_type": "linux",
          "guest_id": "debian12_64Guest", "nics": [{"network_name": network, "mac_address": mac}],
          "disks": [{"id": "disk-0", "file": "disk-0.raw", "format": "raw"}]}
    (vm_dir / "vm.json").write_text(json.dumps(vm, indent=2) + "\n")
    return vm_dir
