"""Inventory of the simulator's datacenter: VMs, templates, networks, datastores."""

# mypy: allow-untyped-calls
# (pyvmomi's generated data objects and pyVim helpers have untyped signatures)

from __future__ import annotations

import re
from typing import Any

from pyVmomi import vim

from providers.vsphere.provider import VsphereProvider
from tests.peers.vcsim.arrange import find_vm, wait

MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


def test_vms_carry_hardware_disks_nics_and_power_state(vsphere_connection_info: dict[str, Any]) -> None:
    instances = VsphereProvider(vsphere_connection_info).list_instances({})
    assert [i.name for i in instances] == sorted(
        ["DC0_H0_VM0", "DC0_H0_VM1", "DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"]
    )
    for info in instances:
        assert info.num_cpu == 1 and info.memory_mb == 32
        assert info.firmware_type == "BIOS" and info.guest_id == "otherGuest"
        assert info.power_state == "poweredOn"
        (disk,) = info.devices.disks
        assert disk.size_bytes == 1024 * 1024
        assert disk.storage_backend_identifier == "LocalDS_0"
        assert disk.path == f"[LocalDS_0] {info.name}/disk1.vmdk"
        (nic,) = info.devices.nics
        assert nic.network_name == "DC0_DVPG0"  # the portgroup's name, not its key
        assert MAC.match(nic.mac_address)


def test_reconfigured_vm_reports_efi_guest_cpu_memory(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance
) -> None:
    vm = find_vm(vcsim_admin, "DC0_H0_VM1")
    spec = vim.vm.ConfigSpec(numCPUs=4, memoryMB=2048, firmware="efi", guestId="windows9Server64Guest")
    wait(vcsim_admin, vm.ReconfigVM_Task(spec=spec))
    info = VsphereProvider(vsphere_connection_info).get_instance({}, "DC0_H0_VM1")
    assert (info.num_cpu, info.memory_mb, info.firmware_type) == (4, 2048, "EFI")
    assert info.guest_id == "windows9Server64Guest" and info.os_type == "windows"
    assert VsphereProvider(vsphere_connection_info).get_instance({}, vm._moId).name == "DC0_H0_VM1"


def test_templates_are_listed_like_vms(
    vsphere_connection_info: dict[str, Any], vcsim_admin: vim.ServiceInstance
) -> None:
    vm = find_vm(vcsim_admin, "DC0_C0_RP0_VM1")
    wait(vcsim_admin, vm.PowerOffVM_Task())
    vm.MarkAsTemplate()
    info = VsphereProvider(vsphere_connection_info).get_instance({}, "DC0_C0_RP0_VM1")
    assert info.power_state == "poweredOff"
    assert len(info.devices.disks) == 1 and len(info.devices.nics) == 1
    names = [i.name for i in VsphereProvider(vsphere_connection_info).list_instances({}, name_filter="rp0")]
    assert names == ["DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"]


def test_networks_exclude_uplinks(vsphere_connection_info: dict[str, Any]) -> None:
    names = [n.name for n in VsphereProvider(vsphere_connection_info).list_networks({})]
    assert names == ["DC0_DVPG0", "VM Network"]


def test_datastores(vsphere_connection_info: dict[str, Any]) -> None:
    storage = VsphereProvider(vsphere_connection_info).list_storage({})
    assert [b.name for b in storage.storage_backends] == ["LocalDS_0"]
    assert storage.config_default == "LocalDS_0"
