"""The Debian test guest, as a VMware export, migrated to Azure with OS morphing, through the REST API.

The guest (``devstack/guest.py`` with cloud-init) is adapted for Azure, converted to a fixed VHD and
uploaded into a managed disk (Azurite holds its bytes; the ARM fake, ``tests/peers/azure/fake_arm.py``,
the control plane). The test reads the VM's OS disk back itself, through a read SAS it asks ARM for, and
looks inside: the Hyper-V drivers are in the initrd and cloud-init reads the Azure datasource. Then it
boots that disk under QEMU with the local boot check.

What the fakes can't show, and Azure would: the VM booting on Hyper-V (QEMU has no VMBus, so the boot
here uses virtio-scsi and virtio-net and proves only that the morph broke nothing QEMU can see), and the Azure
datasource talking to the wireserver. Slow: a TCG morph (the initramfs rebuilt in the appliance) and
a TCG boot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from providers.local.boot import boot_check
from tests.api.cloud_guest_runs import CloudAccounts, timings
from tests.api.guest_runs import BOOT_TIMEOUT, GuestRuns
from tests.conftest import RunningStack
from tests.guests.inside import assert_morphed_for, look_inside
from tests.leftovers import deployments_of
from tests.peers.azure.fixtures import read_managed_disk, tagged

pytestmark = [pytest.mark.slow, pytest.mark.tcg]
HYPER_V = {"hv_vmbus", "hv_storvsc", "hv_netvsc"}


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_debian_guest_to_azure_is_morphed_for_azure_and_still_boots(
        stack: RunningStack, guest_runs: GuestRuns, cloud_accounts: CloudAccounts, tmp_path: Path) -> None:
    """The migration runs with the suite's other guest migrations (``tests/api/guest_runs.py``)."""
    final = guest_runs.wait("azure")
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    print(f"azure run: {timings(final)}")
    cloud = cloud_accounts.azure
    # Tagged by the action that made it: the migration, or on transfers its deployment.
    [vm] = tagged(cloud, "Microsoft.Compute/virtualMachines", [final["id"], *deployments_of(stack, final)])
    disk_id = vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"]
    disk: dict[str, Any] | None = cloud.arm.get(disk_id)
    assert disk is not None and disk["properties"]["diskState"] == "Attached"

    # The VM's OS disk, read back by the test: the morphed guest as a fixed VHD.
    vhd = tmp_path / "os-disk.vhd"
    read = read_managed_disk(cloud, disk["name"], vhd)
    print(f"azure OS disk: {read:,} bytes read back of a {vhd.stat().st_size:,}-byte VHD")
    inside = look_inside(vhd, "vpc")
    assert_morphed_for(inside, HYPER_V, "Azure")

    # QEMU has no VMBus: the disk boots as a SCSI disk (sd, as Hyper-V's storvsc presents it) on a
    # virtio-scsi controller, the NIC is virtio-net. Userspace starts, and DHCP configures the NIC, seen
    # from the host (the lease and the guest's use of the address). Not virtio-blk: the morph lists no
    # virtio driver for Azure, and this guest rebuilds its initrd with MODULES=dep, which adds the
    # appliance's own root driver (virtio_scsi) but not virtio_blk, so a virtio-blk boot stops in the
    # initramfs (root device missing). On Azure that driver is never needed.
    result = boot_check(str(vhd), "vpc", timeout=BOOT_TIMEOUT, workdir=tmp_path / "boot", network_grace=600,
                        disk_bus="virtio-scsi")
    assert result.outcome == "booted", (result.reason, result.stages, result.network)
    assert result.userspace_started and result.address, (result.reason, result.stages, result.network)
