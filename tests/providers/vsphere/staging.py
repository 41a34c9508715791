"""Helpers that arrange the simulator: guest disks staged behind VMs, copies, comparisons."""

# mypy: allow-untyped-calls
# (pyvmomi's generated data objects and pyVim helpers have untyped signatures)

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pyVmomi import vim, vmodl

from diskio.base import DiskSource
from providers.vsphere.connection import wait_task

MiB = 1024 * 1024


def find_vm(si: vim.ServiceInstance, name: str) -> Any:
    content: Any = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return next(vm for vm in view.view if vm.name == name)
    finally:
        view.Destroy()


def vm_disk(vm: Any) -> Any:
    return next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))


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
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            str(raw),
            str(vmdk),
        ],
        check=True,
    )


def stage_disk(si: vim.ServiceInstance, vm: Any, image: Path) -> None:
    """Put ``image`` behind the VM's first disk and size the disk to the image's virtual size."""
    disk = vm_disk(vm)
    ds_name, rel = disk.backing.fileName[1:].split("] ", 1)
    datastore = next(ds for ds in vm.datastore if ds.name == ds_name)
    target = Path(datastore.info.url, rel)
    shutil.copyfile(image, target.with_suffix(".tmp"))
    os.replace(target.with_suffix(".tmp"), target)
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(image)], check=True, capture_output=True, text=True
    ).stdout
    size = json.loads(info)["virtual-size"]
    if disk.capacityInKB * 1024 != size:
        disk.capacityInKB = size // 1024
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
        wait_task(si, vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])), "resize disk")


def snapshot_count(si: vim.ServiceInstance, vm: Any) -> int:
    """How many snapshots ``vm`` has (read with the property collector: the simulator's ``Fetch``
    of an unset property crashes, so pyvmomi accessors like ``vm.snapshot`` can't be used)."""

    def walk(trees: Any) -> int:
        return sum(1 + walk(t.childSnapshotList) for t in trees or [])

    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=vm)],
        propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=["snapshot"])],
    )
    props = si.content.propertyCollector.RetrieveContents([spec])[0].propSet or []
    info: Any = next((p.val for p in props if p.name == "snapshot"), None)
    return walk(info.rootSnapshotList) if info else 0


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
