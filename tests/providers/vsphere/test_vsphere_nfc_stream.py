"""Export when the lease serves a generated stream without Range, as a real vCenter's NFC does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from providers.vsphere.disks import VsphereDiskSource
from providers.vsphere.provider import VsphereProvider
from tests.peers.vcsim import vcsim
from tests.peers.vcsim.arrange import find_vm, snapshot_count, stage_disk
from tests.providers.vsphere.staging import (
    MiB,
    copy_extents,
    images_identical,
    make_guest_disk,
    to_stream_optimized,
)


@pytest.fixture(scope="module")
def vcsim_server() -> Iterator[vcsim.Vcsim]:
    """Overrides the package fixture: this module's simulator streams its lease disks."""
    try:
        server = vcsim.start(nfc_stream=True)
    except vcsim.VcsimUnavailable as exc:
        pytest.fail(f"the vSphere simulator could not be built or started: {exc}")
    try:
        yield server
    finally:
        server.stop()


def test_streamed_lease_is_spooled_to_the_workdir_once(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance, tmp_path: Path
) -> None:
    raw, vmdk = tmp_path / "source.raw", tmp_path / "source.vmdk"
    make_guest_disk(raw, 32 * MiB, seed=3)
    to_stream_optimized(raw, vmdk)
    vm = find_vm(vcsim_admin, "DC0_H0_VM0")
    stage_disk(vcsim_admin, vm, vmdk)
    provider = VsphereProvider(vsphere_connection_info)
    workdir = tmp_path / "work"
    snap = provider.snapshot_instance({}, "DC0_H0_VM0", workdir)
    try:
        src = provider.open_disk(snap, snap.disks[0])
        assert isinstance(src, VsphereDiskSource)
        try:
            copy_extents(src, tmp_path / "copy.raw")
            fetched = src.bytes_fetched
        finally:
            src.close()
        (spooled,) = workdir.glob("vsphere-*.vmdk")
        assert spooled.read_bytes() == vmdk.read_bytes()
        assert fetched == vmdk.stat().st_size  # the stream, once; no Range read succeeded
        # A retried activity reuses the spooled copy instead of streaming again.
        again = provider.open_disk(snap, snap.disks[0])
        assert isinstance(again, VsphereDiskSource)
        again.close()
        assert again.bytes_fetched == 0
    finally:
        provider.delete_snapshot(snap)
    assert images_identical(raw, tmp_path / "copy.raw")
    assert snapshot_count(vcsim_admin, vm) == 0
