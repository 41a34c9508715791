"""Snapshots and changed block tracking on one VM."""

# mypy: allow-untyped-calls
# (pyvmomi's generated data objects and pyVim helpers have untyped signatures)

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyVmomi import vim, vmodl

from core.errors import NotFound, ProviderError
from diskio.base import Extent
from providers.vsphere.connection import properties, wait_task

SNAPSHOT_PREFIX = "sterna-"


def snapshot_name(workdir: Path) -> str:
    """Deterministic per-workdir name: a retried activity finds its own snapshot again."""
    return SNAPSHOT_PREFIX + hashlib.sha256(str(workdir).encode()).hexdigest()[:16]


def _walk(trees: list[Any] | None) -> Iterator[Any]:
    for tree in trees or []:
        yield tree
        yield from _walk(tree.childSnapshotList)


def snapshot_trees(si: vim.ServiceInstance, vm: Any) -> list[Any]:
    """Every snapshot tree node of ``vm`` (empty when it has none)."""
    info = properties(si, vm, ["snapshot"]).get("snapshot")
    return list(_walk(info.rootSnapshotList if info else None))


def find_snapshot(
    si: vim.ServiceInstance, vm: Any, *, name: str | None = None, moid: str | None = None
) -> Any:
    """The snapshot named ``name`` or with moref id ``moid``, or ``None``."""
    for tree in snapshot_trees(si, vm):
        if (name is not None and tree.name == name) or (moid is not None and tree.snapshot._moId == moid):
            return tree.snapshot
    return None


def enable_cbt(si: vim.ServiceInstance, vm: Any, name: str) -> bool:
    """Turn changed block tracking on (it takes effect at the next snapshot); True if it changed."""
    if properties(si, vm, ["config.changeTrackingEnabled"]).get("config.changeTrackingEnabled"):
        return False
    spec = vim.vm.ConfigSpec(changeTrackingEnabled=True)
    wait_task(si, vm.ReconfigVM_Task(spec=spec), f"enable changed block tracking on {name}")
    return True


def create_snapshot(si: vim.ServiceInstance, vm: Any, name: str, vm_name: str, quiesce: bool) -> Any:
    """Create (or find, after a retry) the snapshot ``name``; returns its managed object."""
    existing = find_snapshot(si, vm, name=name)
    if existing is not None:
        return existing
    task = vm.CreateSnapshot_Task(
        name=name, description="Sterna migration point-in-time copy", memory=False, quiesce=quiesce
    )
    return wait_task(si, task, f"snapshot {vm_name}")


def remove_snapshot(si: vim.ServiceInstance, vm: Any, moid: str, vm_name: str) -> bool:
    """Remove one snapshot (its children stay); False when it was already gone."""
    try:
        snap = find_snapshot(si, vm, moid=moid)
    except NotFound:
        return False  # the VM itself is gone
    if snap is None:
        return False
    try:
        task = snap.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
    except vmodl.fault.ManagedObjectNotFound:
        return False
    wait_task(si, task, f"remove snapshot of {vm_name}")
    return True


def changed_areas(vm: Any, snapshot: Any, device_key: int, capacity: int, change_id: str) -> list[Extent]:
    """QueryChangedDiskAreas over the whole disk (the server may answer in pieces)."""
    out: list[Extent] = []
    start = 0
    while start < capacity:
        try:
            info = vm.QueryChangedDiskAreas(
                snapshot=snapshot, deviceKey=device_key, startOffset=start, changeId=change_id
            )
        except vmodl.MethodFault as exc:
            msg = getattr(exc, "msg", "") or type(exc).__name__
            raise ProviderError(f"changed block query (changeId {change_id!r}) failed: {msg}") from None
        for area in info.changedArea or []:
            end = min(area.start + area.length, capacity)
            if end <= area.start:
                continue
            if out and out[-1].end >= area.start:
                out[-1] = Extent(out[-1].offset, max(out[-1].end, end) - out[-1].offset)
            else:
                out.append(Extent(area.start, end - area.start))
        nxt = info.startOffset + info.length
        if nxt <= start:
            break
        start = nxt
    return out
