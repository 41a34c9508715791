"""vSphere inventory: VMs and templates as Coriolis ``export_info``, networks and datastores."""

from __future__ import annotations

import re
from typing import Any

from pyVmomi import vim

from core.errors import InvalidInput, NotFound
from core.models import DiskInfo, InstanceInfo, NetworkInfo, NicInfo, StorageBackend, StorageInfo
from providers.vsphere.connection import collect

VM_PROPS = [
    "name",
    "config.template",
    "config.instanceUuid",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.firmware",
    "config.guestId",
    "config.bootOptions",
    "config.nestedHVEnabled",
    "config.changeTrackingEnabled",
    "runtime.powerState",
    "guest.hostName",
    "guest.toolsRunningStatus",
]

_DATASTORE = re.compile(r"^\[([^\]]+)\]\s*(.*)$")


def split_datastore_path(name: str) -> tuple[str, str]:
    """``"[ds] dir/f.vmdk"`` -> ``("ds", "dir/f.vmdk")``."""
    match = _DATASTORE.match(name or "")
    if not match:
        raise InvalidInput(f"{name!r} is not a datastore path")
    return match.group(1), match.group(2)


def portgroup_names(si: vim.ServiceInstance) -> dict[str, str]:
    """Distributed portgroup key -> name (NIC backings only carry the key)."""
    return {
        p["key"]: p["name"] for _obj, p in collect(si, vim.dvs.DistributedVirtualPortgroup, ["key", "name"])
    }


def disks_of(devices: list[Any]) -> list[Any]:
    """The ``VirtualDisk`` devices, in device order."""
    return [d for d in devices or [] if isinstance(d, vim.vm.device.VirtualDisk)]


def _nic_network(nic: Any, portgroups: dict[str, str]) -> str:
    backing = nic.backing
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        key = str(backing.port.portgroupKey)
        return portgroups.get(key, key)
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo):
        return str(backing.opaqueNetworkId)
    return str(getattr(backing, "deviceName", "") or "")


def disk_info(disk: Any) -> DiskInfo:
    backing = disk.backing
    file_name = getattr(backing, "fileName", None)
    datastore = None
    if file_name:
        try:
            datastore = split_datastore_path(file_name)[0]
        except InvalidInput:
            datastore = None
    size = int(getattr(disk, "capacityInBytes", 0) or 0) or int(disk.capacityInKB) * 1024
    thin = getattr(backing, "thinProvisioned", None)
    return DiskInfo(
        id=str(disk.key),
        size_bytes=size,
        format="vmdk",
        path=file_name,
        allocation_type="dynamic" if thin else "static",
        unit_number=disk.unitNumber,
        controller_id=str(disk.controllerKey) if disk.controllerKey is not None else None,
        storage_backend_identifier=datastore,
    )


def instance_info(obj: Any, props: dict[str, Any], portgroups: dict[str, str]) -> InstanceInfo:
    """Map collected VM properties to ``InstanceInfo``."""
    devices = list(props.get("config.hardware.device") or [])
    disks = [disk_info(d) for d in disks_of(devices)]
    nics = [
        NicInfo(
            id=str(d.key),
            name=d.deviceInfo.label if d.deviceInfo else None,
            network_name=_nic_network(d, portgroups),
            mac_address=d.macAddress or "",
        )
        for d in devices
        if isinstance(d, vim.vm.device.VirtualEthernetCard)
    ]
    controllers = [
        {
            "id": str(d.key),
            "type": type(d).__name__.split(".")[-1],
            "bus_number": getattr(d, "busNumber", None),
        }
        for d in devices
        if isinstance(d, vim.vm.device.VirtualController)
    ]
    cdroms = [
        {"id": str(d.key), "unit_number": d.unitNumber, "controller_id": str(d.controllerKey)}
        for d in devices
        if isinstance(d, vim.vm.device.VirtualCdrom)
    ]
    guest_id = props.get("config.guestId") or None
    boot = props.get("config.bootOptions")
    name = str(props.get("name"))
    return InstanceInfo(
        id=obj._moId,
        name=name,
        instance_name=name,
        num_cpu=int(props.get("config.hardware.numCPU") or 1),
        memory_mb=int(props.get("config.hardware.memoryMB") or 0),
        os_type="windows" if guest_id and guest_id.lower().startswith("win") else "linux",
        firmware_type="EFI" if props.get("config.firmware") == "efi" else "BIOS",
        guest_id=guest_id,
        hostname=props.get("guest.hostName") or None,
        nested_virtualization=bool(props.get("config.nestedHVEnabled")),
        secure_boot=bool(getattr(boot, "efiSecureBootEnabled", False)),
        power_state=str(props.get("runtime.powerState")) if props.get("runtime.powerState") else None,
        devices={"disks": disks, "nics": nics, "controllers": controllers, "cdroms": cdroms},
    )


def list_vms(si: vim.ServiceInstance) -> list[tuple[Any, dict[str, Any]]]:
    """Every VM and template with ``VM_PROPS`` (objects without a config are skipped)."""
    return [(o, p) for o, p in collect(si, vim.VirtualMachine, VM_PROPS) if "config.hardware.numCPU" in p]


def find_vm(si: vim.ServiceInstance, instance: str, where: str) -> tuple[Any, dict[str, Any]]:
    """A VM or template by name, moref id (``vm-42``) or instance UUID."""
    found = [
        (o, p) for o, p in list_vms(si) if instance in (p.get("name"), o._moId, p.get("config.instanceUuid"))
    ]
    if not found:
        raise NotFound(f"no VM or template named {instance!r} on vSphere {where}")
    if len(found) > 1:
        ids = ", ".join(o._moId for o, _p in found)
        raise InvalidInput(f"{len(found)} VMs are named {instance!r} on vSphere {where} ({ids}); use the id")
    return found[0]


def list_networks(si: vim.ServiceInstance) -> list[NetworkInfo]:
    """Standard networks and distributed portgroups, without DVS uplink portgroups (unusable by NICs)."""
    uplinks = {
        pg._moId
        for _dvs, props in collect(si, vim.DistributedVirtualSwitch, ["config.uplinkPortgroup"])
        for pg in props.get("config.uplinkPortgroup") or []
    }
    out = [
        NetworkInfo(id=obj._moId, name=props["name"])
        for obj, props in collect(si, vim.Network, ["name", "tag"])
        if obj._moId not in uplinks
        and not any(getattr(t, "key", "") == "SYSTEM/DVS.UPLINKPG" for t in props.get("tag") or [])
    ]
    return sorted(out, key=lambda n: n.name)


def list_storage(si: vim.ServiceInstance) -> StorageInfo:
    """Datastores."""
    backends = [
        StorageBackend(id=obj._moId, name=props["name"])
        for obj, props in collect(si, vim.Datastore, ["name"])
    ]
    backends.sort(key=lambda b: b.name)
    return StorageInfo(storage_backends=backends, config_default=backends[0].name if backends else None)
