"""Export from the simulator: snapshot, lease/datastore reads, CBT incrementals, cleanup.

Each VM's disk holds a guest disk as a streamOptimized VMDK (what vSphere's NFC serves); the
copies are compared with the source by ``qemu-img compare``.
"""

# mypy: allow-untyped-calls
# (pyvmomi's generated data objects have untyped constructors)

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from core.errors import InvalidInput, NotFound, TransferError
from diskio.base import Extent
from providers.vsphere.disks import VsphereDiskSource
from providers.vsphere.provider import VsphereProvider
from tests.peers.vcsim.arrange import add_disk, find_vm, snapshot_count, stage_disk, vm_disks, wait
from tests.providers.vsphere.staging import (
    MiB,
    copy_extents,
    images_identical,
    make_guest_disk,
    to_stream_optimized,
    write_at,
)


def staged(
    vcsim_admin: vim.ServiceInstance, tmp_path: Path, vm_name: str, size: int = 32 * MiB
) -> tuple[Any, Path]:
    """Stage a fresh guest disk behind ``vm_name``; return the VM and the source raw image."""
    raw, vmdk = tmp_path / "source.raw", tmp_path / "source.vmdk"
    make_guest_disk(raw, size, seed=len(vm_name))
    to_stream_optimized(raw, vmdk)
    vm = find_vm(vcsim_admin, vm_name)
    stage_disk(vcsim_admin, vm, vmdk)
    return vm, raw


def test_full_then_incremental_copy_moves_only_changed_areas(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    vm, source = staged(vcsim_admin, tmp_path, "DC0_H0_VM0")
    copy = tmp_path / "copy.raw"

    first = provider.snapshot_instance({}, "DC0_H0_VM0", tmp_path / "run1")
    assert snapshot_count(vcsim_admin, vm) == 1
    (disk,) = first.disks
    assert disk.size_bytes == 32 * MiB
    assert first.details["change_ids"][disk.disk_id] == disk.details["change_id"]
    src = provider.open_disk(first, disk)
    assert isinstance(src, VsphereDiskSource)
    try:
        # CBT "*": only the allocated areas of the guest disk, not its 32 MiB
        assert not src.incremental
        allocated = sum(e.length for e in src.extents())
        assert 0 < allocated < 2 * MiB
        moved_full = copy_extents(src, copy)
        fetched_full = src.bytes_fetched
    finally:
        src.close()
        provider.delete_snapshot(first)
    assert moved_full == allocated
    assert images_identical(source, copy)
    assert snapshot_count(vcsim_admin, vm) == 0

    # A small change in the guest, then a second copy since the first one's changeIds.
    write_at(source, 5 * MiB + 100, b"changed by the guest" * 50)
    to_stream_optimized(source, tmp_path / "source.vmdk")
    stage_disk(vcsim_admin, vm, tmp_path / "source.vmdk")
    assert not images_identical(source, copy)

    env = {"previous_change_ids": first.details["change_ids"]}
    second = provider.snapshot_instance(env, "DC0_H0_VM0", tmp_path / "run2")
    (disk2,) = second.disks
    assert disk2.details["previous_change_id"] == disk.details["change_id"]
    assert disk2.details["change_id"] != disk.details["change_id"]
    src = provider.open_disk(second, disk2)
    assert isinstance(src, VsphereDiskSource)
    try:
        assert src.incremental and src.changed_since == disk.details["change_id"]
        assert src.extents() == [Extent(5 * MiB, 64 * 1024)]  # the one 64 KiB block that changed
        moved_incremental = copy_extents(src, copy)
        fetched_incremental = src.bytes_fetched
    finally:
        src.close()
        provider.delete_snapshot(second)
    print(  # shown with `pytest -rP`: what each copy moved into the target and over the wire
        f"full copy: {moved_full} guest bytes copied, {fetched_full} bytes fetched; "
        f"incremental: {moved_incremental} guest bytes copied, {fetched_incremental} bytes fetched"
    )
    assert moved_incremental == 64 * 1024
    assert fetched_incremental < fetched_full / 10  # over the wire too, not just into the target
    assert images_identical(source, copy)
    assert snapshot_count(vcsim_admin, vm) == 0


def test_datastore_transport_reads_the_same_bytes(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    vm, source = staged(vcsim_admin, tmp_path, "DC0_H0_VM1")
    snap = provider.snapshot_instance({"disk_transport": "datastore"}, "DC0_H0_VM1", tmp_path / "w")
    src = provider.open_disk(snap, snap.disks[0])
    try:
        copy_extents(src, tmp_path / "copy.raw")
    finally:
        src.close()
        provider.delete_snapshot(snap)
    assert images_identical(source, tmp_path / "copy.raw")
    assert snapshot_count(vcsim_admin, vm) == 0


def test_snapshot_is_idempotent_per_workdir_and_delete_tolerates_repeats(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    vm = find_vm(vcsim_admin, "DC0_H0_VM1")
    one = provider.snapshot_instance({}, "DC0_H0_VM1", tmp_path / "same")
    two = provider.snapshot_instance({}, "DC0_H0_VM1", tmp_path / "same")
    assert one.snapshot_id == two.snapshot_id
    assert snapshot_count(vcsim_admin, vm) == 1
    # The ESXi host its reads load, for the per-source-host transfer limit.
    host = vm.runtime.host.name
    assert host and provider.source_host(one) == f"vsphere:{provider._endpoint.where}/{host}"
    provider.delete_snapshot(one)
    provider.delete_snapshot(two)
    assert snapshot_count(vcsim_admin, vm) == 0


def test_snapshot_removed_after_a_failed_export(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    vm, _source = staged(vcsim_admin, tmp_path, "DC0_C0_RP0_VM0")
    # The datastore file gets damaged: its VMDK footer (grain directory location) is cut off.
    truncated = tmp_path / "truncated.vmdk"
    truncated.write_bytes((tmp_path / "source.vmdk").read_bytes()[:-1536])
    stage_disk(vcsim_admin, vm, truncated)
    snap = provider.snapshot_instance({}, "DC0_C0_RP0_VM0", tmp_path / "w")
    try:
        assert snapshot_count(vcsim_admin, vm) == 1
        src = provider.open_disk(snap, snap.disks[0])
        try:
            with pytest.raises(TransferError, match="truncated"):
                copy_extents(src, tmp_path / "copy.raw")
        finally:
            src.close()
    finally:
        provider.delete_snapshot(snap)
    assert snapshot_count(vcsim_admin, vm) == 0


async def test_snapshot_removed_after_cancel(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    vm, _source = staged(vcsim_admin, tmp_path, "DC0_C0_RP0_VM0")
    snap = await asyncio.to_thread(provider.snapshot_instance, {}, "DC0_C0_RP0_VM0", tmp_path / "w")
    src = await asyncio.to_thread(provider.open_disk, snap, snap.disks[0])
    started = asyncio.Event()
    chunks: list[int] = []

    async def copy_loop() -> None:
        # The copier's shape: reads in threads, awaiting between chunks (where cancellation lands).
        for extent in src.extents():
            for offset in range(extent.offset, extent.end, 64 * 1024):
                data = await asyncio.to_thread(src.read, offset, min(64 * 1024, extent.end - offset))
                chunks.append(len(data))
                started.set()
                await asyncio.sleep(3600)  # stands for a slow network: never finishes by itself

    task = asyncio.create_task(copy_loop())
    try:
        await started.wait()
        assert snapshot_count(vcsim_admin, vm) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await asyncio.to_thread(src.close)
        await asyncio.to_thread(provider.delete_snapshot, snap)
    assert chunks == [64 * 1024]
    assert snapshot_count(vcsim_admin, vm) == 0


def test_template_exports_without_a_snapshot(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    vm, source = staged(vcsim_admin, tmp_path, "DC0_C0_RP0_VM1")
    wait(vcsim_admin, vm.PowerOffVM_Task())
    vm.MarkAsTemplate()
    snap = provider.snapshot_instance({}, "DC0_C0_RP0_VM1", tmp_path / "w")
    assert snap.snapshot_id == f"template:{vm._moId}"
    assert snapshot_count(vcsim_admin, vm) == 0
    src = provider.open_disk(snap, snap.disks[0])
    try:
        copy_extents(src, tmp_path / "copy.raw")
    finally:
        src.close()
        provider.delete_snapshot(snap)
    assert images_identical(source, tmp_path / "copy.raw")


def test_shutdown_powers_the_vm_off(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    assert provider.get_instance({}, "DC0_H0_VM1").power_state == "poweredOn"
    provider.shutdown_instance({}, "DC0_H0_VM1")
    assert provider.get_instance({}, "DC0_H0_VM1").power_state == "poweredOff"
    provider.shutdown_instance({}, "DC0_H0_VM1")  # already off: nothing to do


@pytest.mark.parametrize("transport", ["nfc", "datastore"])
def test_each_disk_of_a_multi_disk_vm_is_read_from_its_own_file(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path, transport: str
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    vm = find_vm(vcsim_admin, "DC0_C0_RP0_VM0")
    if len(vm_disks(vm)) < 2:  # the first parametrization adds it
        add_disk(vcsim_admin, vm, 8 * MiB)
    sources: dict[str, Path] = {}  # datastore path of a disk -> its guest image
    for index, (size, seed) in enumerate([(24 * MiB, 11), (8 * MiB, 12)]):
        raw, vmdk = tmp_path / f"source{index}.raw", tmp_path / f"source{index}.vmdk"
        make_guest_disk(raw, size, seed=seed)
        to_stream_optimized(raw, vmdk)
        vm = find_vm(vcsim_admin, "DC0_C0_RP0_VM0")
        stage_disk(vcsim_admin, vm, vmdk, index=index)
        sources[vm_disks(vm)[index].backing.fileName] = raw
    snap = provider.snapshot_instance({"disk_transport": transport}, "DC0_C0_RP0_VM0", tmp_path / "w")
    try:
        assert sorted(d.size_bytes for d in snap.disks) == [8 * MiB, 24 * MiB]
        for disk in snap.disks:
            assert disk.path is not None
            src = provider.open_disk(snap, disk)
            try:
                copy_extents(src, tmp_path / f"copy-{disk.disk_id}.raw")
            finally:
                src.close()
            assert images_identical(sources[disk.path], tmp_path / f"copy-{disk.disk_id}.raw")
    finally:
        provider.delete_snapshot(snap)
    assert snapshot_count(vcsim_admin, vm) == 0


def test_without_cbt_a_copy_reads_the_allocated_grains(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    vm, source = staged(vcsim_admin, tmp_path, "DC0_H0_VM1")
    wait(vcsim_admin, vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=False)))
    snap = provider.snapshot_instance({"enable_cbt": False}, "DC0_H0_VM1", tmp_path / "w")
    try:
        assert snap.details["change_ids"] == {}
        src = provider.open_disk(snap, snap.disks[0])
        try:
            assert not getattr(src, "incremental", True)
            assert 0 < sum(e.length for e in src.extents()) < 2 * MiB  # the VMDK's own grain map
            copy_extents(src, tmp_path / "copy.raw")
        finally:
            src.close()
    finally:
        provider.delete_snapshot(snap)
    assert images_identical(source, tmp_path / "copy.raw")


def test_unknown_baseline_change_id_falls_back_to_the_whole_disk(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    _vm, source = staged(vcsim_admin, tmp_path, "DC0_H0_VM0")
    disk_id = provider.get_instance({}, "DC0_H0_VM0").devices.disks[0].id
    env = {"previous_change_ids": {disk_id: "52 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00/999"}}
    snap = provider.snapshot_instance(env, "DC0_H0_VM0", tmp_path / "w")
    try:
        src = provider.open_disk(snap, snap.disks[0])
        try:
            assert src.extents() == [Extent(0, 32 * MiB)]  # CBT can't tell: everything may have changed
            copy_extents(src, tmp_path / "copy.raw")
        finally:
            src.close()
    finally:
        provider.delete_snapshot(snap)
    assert images_identical(source, tmp_path / "copy.raw")


def test_validate_source(vsphere_connection_info: dict[str, Any]) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    assert provider.validate_source({}, "DC0_H0_VM0").name == "DC0_H0_VM0"
    with pytest.raises(InvalidInput, match="disk_transport"):
        provider.validate_source({"disk_transport": "vddk"}, "DC0_H0_VM0")


def test_opening_a_removed_snapshot_is_not_found(
    vsphere_connection_info: dict[str, Any], tmp_path: Path
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    snap = provider.snapshot_instance({}, "DC0_H0_VM0", tmp_path / "w")
    provider.delete_snapshot(snap)
    with pytest.raises(NotFound, match="gone"):
        provider.open_disk(snap, snap.disks[0])


def test_datastore_transport_range_reads_a_flat_disk_behind_its_descriptor(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    provider = VsphereProvider(vsphere_connection_info)
    raw = tmp_path / "source.raw"
    make_guest_disk(raw, 32 * MiB, seed=21)
    vm = find_vm(vcsim_admin, "DC0_H0_VM0")
    stage_disk(vcsim_admin, vm, raw, flat=True)  # DC0_H0_VM0/disk1.vmdk + disk1-flat.vmdk
    snap = provider.snapshot_instance({"disk_transport": "datastore"}, "DC0_H0_VM0", tmp_path / "w")
    try:
        src = provider.open_disk(snap, snap.disks[0])
        assert isinstance(src, VsphereDiskSource)
        try:
            allocated = sum(e.length for e in src.extents())
            copy_extents(src, tmp_path / "copy.raw")
            fetched = src.bytes_fetched
        finally:
            src.close()
    finally:
        provider.delete_snapshot(snap)
    assert images_identical(raw, tmp_path / "copy.raw")
    assert allocated < 2 * MiB
    assert fetched < allocated + 64 * 1024  # the allocated ranges plus the descriptor: no full read
