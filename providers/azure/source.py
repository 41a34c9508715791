"""Azure as a migration source: inventory of the resource group's VMs, incremental snapshots of
their managed disks, and reads of only the allocated page ranges through a read SAS.

A snapshot's name derives from the scratch folder of the migration (``workdir``) and the disk,
so a retried ``snapshot_instance`` finds the snapshots it made. ``open_disk`` grants the read SAS;
``delete_snapshot`` revokes it and deletes the snapshot (both tolerate repeats).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from core.errors import NotFound
from core.models import Devices, DiskInfo, DiskLocator, InstanceInfo, NicInfo, SourceSnapshot
from diskio.base import DiskSource
from providers.azure import tags as t
from providers.azure.deploy import vm_sizes
from providers.azure.errors import azure_errors
from providers.azure.importer import grant, revoke
from providers.azure.pageblob import PageBlobSource
from providers.azure.session import AzureClients
from providers.base import ActionContext


def _vms(clients: AzureClients) -> list[Any]:
    with azure_errors(f"listing virtual machines in {clients.rg}", clients.conn.secrets):
        return list(clients.compute.virtual_machines.list(clients.rg))


def _disk(clients: AzureClients, disk_id: str) -> Any:
    name = t.parse_id(disk_id).get("disks", disk_id)
    with azure_errors(f"reading managed disk {name}", clients.conn.secrets):
        return clients.compute.disks.get(clients.rg, name)


def _nic_network(clients: AzureClients, nic_id: str) -> tuple[str, str | None]:
    ids = t.parse_id(nic_id)
    with azure_errors(f"reading network interface {ids.get('networkinterfaces')}", clients.conn.secrets):
        nic = clients.network.network_interfaces.get(ids.get("resourcegroups", clients.rg),
                                                     ids.get("networkinterfaces", ""))
    configs = nic.ip_configurations or []
    subnet = str(configs[0].subnet.id) if configs and configs[0].subnet else "default"
    return subnet, getattr(nic, "mac_address", None)


def instance_info(clients: AzureClients, vm: Any, sizes: dict[str, Any]) -> InstanceInfo:
    size = sizes.get(t.text(vm.hardware_profile.vm_size))
    storage = vm.storage_profile
    refs = [storage.os_disk, *(storage.data_disks or [])]
    disks = []
    for unit, ref in enumerate(refs):
        found = _disk(clients, str(ref.managed_disk.id))
        sku = t.text(getattr(found.sku, "name", "")) or None
        disks.append(DiskInfo(id=str(found.name), size_bytes=int(found.disk_size_bytes or 0), format="raw",
                              unit_number=unit, storage_backend_identifier=sku))
    nics = []
    for ref in (vm.network_profile.network_interfaces or []) if vm.network_profile else []:
        subnet, mac = _nic_network(clients, str(ref.id))
        nics.append(NicInfo(network_name=subnet, mac_address=(mac or "").replace("-", ":").lower(), id=str(ref.id)))
    os_type = (t.text(getattr(storage.os_disk, "os_type", "")) or "Linux").lower()
    return InstanceInfo(
        id=str(vm.id), name=str(vm.name), instance_name=str(vm.name),
        num_cpu=int(getattr(size, "number_of_cores", 1) or 1),
        memory_mb=int(getattr(size, "memory_in_mb", 1024) or 1024),
        os_type="windows" if os_type == "windows" else "linux", flavor_name=t.text(vm.hardware_profile.vm_size),
        devices=Devices(disks=disks, nics=nics),
    )


def list_instances(clients: AzureClients, name_filter: str | None) -> list[InstanceInfo]:
    sizes = {s.name: s for s in vm_sizes(clients)}
    vms = [vm for vm in _vms(clients) if not name_filter or name_filter in str(vm.name)]
    return [instance_info(clients, vm, sizes) for vm in vms]


def get_instance(clients: AzureClients, instance: str) -> InstanceInfo:
    for vm in _vms(clients):
        if instance in (vm.name, vm.id):
            return instance_info(clients, vm, {s.name: s for s in vm_sizes(clients)})
    raise NotFound(f"no virtual machine '{instance}' in resource group {clients.rg}")


def _snapshot_name(workdir: Path, disk: str) -> str:
    tag = hashlib.sha256(str(workdir).encode()).hexdigest()[:10]
    return t.resource_name("sterna-src", tag, disk, limit=80)


def snapshot_instance(clients: AzureClients, instance: str, workdir: Path, action: ActionContext) -> SourceSnapshot:
    info = get_instance(clients, instance)
    tags = {k: v for k, v in {**t.action_tags(action), t.ROLE_TAG: t.ROLE_SOURCE_SNAPSHOT,
                              t.SOURCE_INSTANCE_TAG: info.name}.items() if v}
    locators = []
    for disk in info.devices.disks:
        found = _disk(clients, disk.id)
        name = _snapshot_name(workdir, disk.id)
        # Incremental: Azure stores only what changed since the disk's previous snapshot.
        body = {"location": clients.conn.location, "tags": {**tags, t.DISK_TAG: disk.id},
                "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": str(found.id)},
                               "incremental": True}}
        with azure_errors(f"snapshotting managed disk {disk.id}", clients.conn.secrets):
            snap = clients.compute.snapshots.begin_create_or_update(clients.rg, name, body).result()
        locators.append(DiskLocator(disk_id=disk.id, size_bytes=disk.size_bytes, format="raw",
                                    details={"snapshot": name, "snapshot_id": str(snap.id)}))
    return SourceSnapshot(instance=info.name, snapshot_id=_snapshot_name(workdir, ""), disks=locators,
                          details={"snapshots": [d.details["snapshot"] for d in locators]})


def open_disk(clients: AzureClients, disk: DiskLocator) -> DiskSource:
    name = str(disk.details["snapshot"])
    sas = grant(clients, name, "Read", resource="snapshots")
    return PageBlobSource(sas, disk.size_bytes, verify=clients.conn.verify, secrets=clients.conn.secrets,
                          name=f"snapshot {name}")


def delete_snapshot(clients: AzureClients, snapshot: SourceSnapshot) -> None:
    for name in snapshot.details.get("snapshots", []):
        try:
            revoke(clients, name, resource="snapshots")
        except NotFound:
            continue
        with azure_errors(f"deleting snapshot {name}", clients.conn.secrets):
            clients.compute.snapshots.begin_delete(clients.rg, name).result()
