"""The ``local`` inventory: a directory where each VM is a folder holding ``vm.json`` and its disks.

``vm.json``::

    {"name": "vm-a", "num_cpu": 2, "memory_mb": 2048, "firmware": "BIOS", "os_type": "linux",
     "nics": [{"network_name": "VM Network", "mac_address": "00:50:56:aa:bb:01"}],
     "disks": [{"id": "disk-0", "file": "disk-0.raw", "format": "raw"}]}

Disk formats are whatever ``qemu-img`` reads (raw, qcow2, vmdk, vpc...).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from core.errors import InvalidInput, NotFound
from core.models import Devices, DiskInfo, InstanceInfo, NicInfo
from diskio.convert import KNOWN_FORMATS
from providers.local.confine import inside

VM_FILE = "vm.json"


def image_info(path: Path, fmt: str) -> dict[str, Any]:
    """``qemu-img info`` of one image; ``-f`` is always explicit (a probed fixed VHD reads as raw)."""
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", fmt, str(path)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise InvalidInput(f"Disk image {path.name} is not a readable {fmt} image: {out.stderr.strip()}")
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def read_vm(vm_dir: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((vm_dir / VM_FILE).read_text())
    except FileNotFoundError as exc:
        raise NotFound(f"Instance '{vm_dir.name}' not found") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{vm_dir.name}/{VM_FILE} is not valid JSON: {exc}") from exc
    return data


def to_instance_info(vm_dir: Path, vm: dict[str, Any]) -> InstanceInfo:
    disks = []
    for index, disk in enumerate(vm.get("disks", [])):
        fmt = disk.get("format", "raw")
        if fmt not in KNOWN_FORMATS or not isinstance(disk.get("file"), str):
            raise InvalidInput(f"Disk {index} of instance '{vm_dir.name}' needs a 'file' and a known 'format'")
        # vm.json is user data: its disk files must not reach outside the VM's folder (symlinks included).
        path = inside(vm_dir, disk["file"], f"Disk file of instance '{vm_dir.name}'")
        if not path.exists():
            raise InvalidInput(f"Disk file {disk['file']} of instance '{vm_dir.name}' is missing")
        size = int(disk.get("size_bytes") or image_info(path, fmt)["virtual-size"])
        disks.append(DiskInfo(id=disk.get("id", f"disk-{index}"), size_bytes=size, format=fmt, path=str(path),
                              unit_number=index))
    nics = [NicInfo(network_name=n["network_name"], mac_address=n.get("mac_address", ""), id=str(i))
            for i, n in enumerate(vm.get("nics", []))]
    name = vm.get("name", vm_dir.name)
    return InstanceInfo(
        id=vm_dir.name,
        name=name,
        instance_name=name,
        num_cpu=int(vm.get("num_cpu", 1)),
        memory_mb=int(vm.get("memory_mb", 1024)),
        os_type=vm.get("os_type", "linux"),
        firmware_type="EFI" if str(vm.get("firmware", "BIOS")).upper() in {"EFI", "UEFI"} else "BIOS",
        guest_id=vm.get("guest_id"),
        hostname=vm.get("hostname"),
        power_state=vm.get("power_state", "POWERED_OFF"),
        devices=Devices(disks=disks, nics=nics),
    )


class Inventory:
    def __init__(self, root: Path) -> None:
        self.root = root

    def vm_dir(self, instance: str) -> Path:
        # Instance names come from users: refuse anything that escapes the inventory.
        if not instance or "/" in instance or instance in {".", ".."}:
            raise InvalidInput(f"Invalid instance name '{instance}'")
        inside(self.root, instance, "Instance")
        return self.root / instance

    def list(self, name_filter: str | None = None) -> list[InstanceInfo]:
        out = []
        root = self.root.resolve()
        # A VM folder that is a symlink to elsewhere is not part of this inventory.
        for vm_dir in sorted(p for p in self.root.iterdir()
                             if (p / VM_FILE).is_file() and p.resolve().parent == root):
            if name_filter and name_filter.lower() not in vm_dir.name.lower():
                continue
            out.append(to_instance_info(vm_dir, read_vm(vm_dir)))
        return out

    def get(self, instance: str) -> InstanceInfo:
        vm_dir = self.vm_dir(instance)
        if not (vm_dir / VM_FILE).is_file():
            raise NotFound(f"Instance '{instance}' not found in local inventory {self.root}")
        return to_instance_info(vm_dir, read_vm(vm_dir))
