"""Arrange govmomi's simulator through pyvmomi: find VMs, put guest disks behind them, count snapshots.

Used by the vSphere provider tests and by end-to-end tests that migrate from the simulator.
The datastore lives on this machine (``Datastore.info.url``), so staging a disk is a file copy.
"""

# mypy: allow-untyped-calls
# (pyvmomi's generated data objects and pyVim helpers have untyped signatures)

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from pyVim.connect import SmartConnect
from pyVmomi import vim, vmodl

from tests.peers.vcsim.vcsim import Vcsim


def admin_session(server: Vcsim) -> vim.ServiceInstance:
    """A pyvmomi session for arranging the simulator (caller disconnects)."""
    host, port = server.host.rsplit(":", 1)
    si: vim.ServiceInstance = SmartConnect(
        host=host, port=int(port), user=server.user, pwd=server.password, disableSslCertValidation=True
    )
    return si


def wait(si: vim.ServiceInstance, task: Any, timeout: float = 60) -> Any:
    """Wait for a task by its narrow properties (see ``snapshot_count`` on why not accessors)."""
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=task)],
        propSet=[pc.PropertySpec(type=vim.Task, pathSet=["info.state", "info.error", "info.result"])],
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        props = {p.name: p.val for p in si.content.propertyCollector.RetrieveContents([spec])[0].propSet}
        if props["info.state"] == "success":
            return props.get("info.result")
        if props["info.state"] == "error":
            raise RuntimeError(f"simulator task failed: {props.get('info.error')}")
        time.sleep(0.05)
    raise TimeoutError("simulator task did not finish")


def find_vm(si: vim.ServiceInstance, name: str) -> Any:
    content: Any = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        return next(vm for vm in view.view if vm.name == name)
    finally:
        view.Destroy()


def vm_disks(vm: Any) -> list[Any]:
    """The VM's ``VirtualDisk`` devices by controller and unit (the simulator reorders devices on edits)."""
    disks = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
    return sorted(disks, key=lambda d: (d.controllerKey, d.unitNumber))


def add_disk(si: vim.ServiceInstance, vm: Any, capacity: int) -> None:
    """Give ``vm`` one more (empty) disk on the controller of its first disk."""
    first = vm_disks(vm)[0]
    used = {d.unitNumber for d in vm.config.hardware.device if d.controllerKey == first.controllerKey}
    unit = min(set(range(16)) - used - {7})  # unit 7 is the SCSI controller itself
    ds_name, rel = first.backing.fileName[1:].split("] ", 1)
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        diskMode="persistent",
        thinProvisioned=True,
        fileName=f"[{ds_name}] {rel.rsplit('/', 1)[0]}/disk-unit{unit}.vmdk",
    )
    disk = vim.vm.device.VirtualDisk(
        key=-1,
        controllerKey=first.controllerKey,
        unitNumber=unit,
        capacityInKB=capacity // 1024,
        backing=backing,
    )
    change = vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk)
    wait(si, vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])))


def stage_disk(si: vim.ServiceInstance, vm: Any, image: Path, index: int = 0, *, flat: bool = False) -> None:
    """Put ``image`` behind the VM's ``index``-th disk and size the disk to the image's virtual size.

    ``flat`` writes it the way VMFS keeps disks: a descriptor plus a ``-flat.vmdk`` extent.
    """
    disk = vm_disks(vm)[index]
    ds_name, rel = disk.backing.fileName[1:].split("] ", 1)
    datastore = next(ds for ds in vm.datastore if ds.name == ds_name)
    target = Path(datastore.info.url, rel)
    if flat:
        subprocess.run(
            ["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=monolithicFlat", str(image), str(target)],
            check=True,
        )
    else:
        shutil.copyfile(image, target.with_suffix(".tmp"))
        os.replace(target.with_suffix(".tmp"), target)
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(image)], check=True, capture_output=True, text=True
    ).stdout
    size = json.loads(info)["virtual-size"]
    if disk.capacityInKB * 1024 != size:
        disk.capacityInKB = size // 1024
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
        wait(si, vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])))


def snapshot_trees(si: vim.ServiceInstance, vm: Any) -> list[Any]:
    """Every snapshot tree node of ``vm``, read with the property collector: the simulator's
    ``Fetch`` of an unset property crashes, so pyvmomi accessors like ``vm.snapshot`` can't be used."""

    def walk(trees: Any) -> list[Any]:
        return [node for t in trees or [] for node in (t, *walk(t.childSnapshotList))]

    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=vm)],
        propSet=[pc.PropertySpec(type=vim.VirtualMachine, pathSet=["snapshot"])],
    )
    props = si.content.propertyCollector.RetrieveContents([spec])[0].propSet or []
    info: Any = next((p.val for p in props if p.name == "snapshot"), None)
    return walk(info.rootSnapshotList) if info else []


def snapshot_count(si: vim.ServiceInstance, vm: Any) -> int:
    """How many snapshots ``vm`` has."""
    return len(snapshot_trees(si, vm))
