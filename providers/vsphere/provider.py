"""The ``vmware_vsphere`` provider: a vCenter/ESXi migration source (pyvmomi).

Export of one VM: enable changed block tracking, take a (quiesced when VMware Tools run)
snapshot, read each disk of the snapshot through an export lease or the datastore (see
``disks``), remove the snapshot. Templates cannot be snapshotted but never change, so they are
exported directly. The snapshot's changeIds land in ``SourceSnapshot.details["change_ids"]``;
passing them back as ``env["previous_change_ids"]`` makes the next copy move changed areas only.
"""

# mypy: allow-untyped-calls
# (pyvmomi's generated data objects and pyVim helpers have untyped signatures)

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pyVim.connect import Disconnect
from pyVmomi import vim, vmodl

from core.errors import InvalidInput, ProviderError
from core.models import DiskLocator, InstanceInfo, NetworkInfo, SourceSnapshot, StorageInfo
from core.polling import poll_until
from diskio.base import DiskSource, Extent
from providers.base import (
    NO_ACTION,
    ActionContext,
    ChangeTrackingSource,
    EndpointProvider,
    ExportProvider,
    NetworksProvider,
    StorageProvider,
)
from providers.vsphere import inventory, snapshots
from providers.vsphere.connection import (
    CONNECTION_SCHEMA,
    Endpoint,
    connect,
    properties,
    session,
    session_cookie,
    translate_faults,
    wait_task,
)
from providers.vsphere.disks import Lease, VsphereDiskSource, datastore_url, lease_url
from providers.vsphere.http import HttpRangeReader

TRANSPORTS = ("nfc", "datastore")

SOURCE_ENV_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "disk_transport": {"type": "string", "enum": list(TRANSPORTS), "default": "nfc"},
        "previous_change_ids": {"type": "object", "additionalProperties": {"type": "string"}},
        "enable_cbt": {"type": "boolean", "default": True},
        "shutdown_timeout": {"type": "number", "default": 300},
    },
}


class VsphereProvider(EndpointProvider, ExportProvider, NetworksProvider, StorageProvider, ChangeTrackingSource):
    """VMware vSphere as a migration source."""

    PLUGIN_NAME: ClassVar[str] = "vmware_vsphere"

    def __init__(self, connection_info: Mapping[str, Any]) -> None:
        super().__init__(connection_info)
        self._endpoint = Endpoint.parse(connection_info)

    @classmethod
    def connection_info_schema(cls) -> dict[str, Any]:
        return CONNECTION_SCHEMA

    @classmethod
    def source_environment_schema(cls) -> dict[str, Any]:
        return SOURCE_ENV_SCHEMA

    # ------------------------------------------------------------------ control plane

    @translate_faults("validate the vSphere connection")
    def validate_connection(self) -> None:
        with session(self.connection_info) as si:
            about = si.content.about
            if about is None or not about.apiVersion:
                raise ProviderError(f"{self._endpoint.where} does not look like vSphere")

    @translate_faults("list vSphere VMs")
    def list_instances(self, env: Mapping[str, Any], name_filter: str | None = None) -> list[InstanceInfo]:
        with session(self.connection_info) as si:
            portgroups = inventory.portgroup_names(si)
            out = [
                inventory.instance_info(obj, props, portgroups)
                for obj, props in inventory.list_vms(si)
                if not name_filter or name_filter.lower() in str(props.get("name", "")).lower()
            ]
        return sorted(out, key=lambda i: i.name)

    @translate_faults("read a vSphere VM")
    def get_instance(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        with session(self.connection_info) as si:
            obj, props = inventory.find_vm(si, instance, self._endpoint.where)
            return inventory.instance_info(obj, props, inventory.portgroup_names(si))

    @translate_faults("validate a vSphere source VM")
    def validate_source(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        transport = env.get("disk_transport", "nfc")
        if transport not in TRANSPORTS:
            raise InvalidInput(f"disk_transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        info = self.get_instance(env, instance)
        if not info.devices.disks:
            raise InvalidInput(f"VM {info.name!r} has no disks to export")
        return info

    @translate_faults("list vSphere networks")
    def list_networks(self, env: Mapping[str, Any]) -> list[NetworkInfo]:
        with session(self.connection_info) as si:
            return inventory.list_networks(si)

    @translate_faults("list vSphere datastores")
    def list_storage(self, env: Mapping[str, Any]) -> StorageInfo:
        with session(self.connection_info) as si:
            return inventory.list_storage(si)

    @translate_faults("shut a vSphere VM down")
    def shutdown_instance(self, env: Mapping[str, Any], instance: str) -> None:
        """Guest shutdown when VMware Tools run (power-off after ``shutdown_timeout``), else power off."""
        timeout = float(env.get("shutdown_timeout", 300))
        with session(self.connection_info) as si:
            vm, props = inventory.find_vm(si, instance, self._endpoint.where)
            name = props["name"]
            if props.get("config.template") or props.get("runtime.powerState") == "poweredOff":
                return
            if props.get("guest.toolsRunningStatus") == "guestToolsRunning":
                try:
                    vm.ShutdownGuest()
                except vmodl.MethodFault:
                    pass  # tools went away: power off below
                else:
                    def powered_off() -> bool | None:
                        state = properties(si, vm, ["runtime.powerState"]).get("runtime.powerState")
                        return True if state == "poweredOff" else None

                    if poll_until(time.monotonic() + timeout, 2, powered_off):
                        return
            wait_task(si, vm.PowerOffVM_Task(), f"power off {name}")

    # ------------------------------------------------------------------ export

    @translate_faults("snapshot a vSphere VM")
    def snapshot_instance(self, env: Mapping[str, Any], instance: str, workdir: Path,
                          action: ActionContext = NO_ACTION) -> SourceSnapshot:
        transport = env.get("disk_transport", "nfc")
        if transport not in TRANSPORTS:
            raise InvalidInput(f"disk_transport must be one of {', '.join(TRANSPORTS)}, not {transport!r}")
        previous: Mapping[str, str] = env.get("previous_change_ids") or {}
        with session(self.connection_info) as si:
            vm, props = inventory.find_vm(si, instance, self._endpoint.where)
            name = props["name"]
            details: dict[str, Any] = {
                "vm_moref": vm._moId,
                "vm_name": name,
                "transport": transport,
                "datacenter": _datacenter_name(si, vm),
                # The ESXi host that serves the VM's disk reads (STERNA_MAX_TRANSFERS_PER_SOURCE_HOST).
                "esx_host": _host_name(si, vm),
                "template": bool(props.get("config.template")),
                "workdir": str(workdir),
            }
            if details["template"]:
                # Templates are read-only: no snapshot needed (nor possible), no CBT.
                devices = props.get("config.hardware.device") or []
                details["snapshot_moref"] = None
                return self._snapshot(instance, f"template:{vm._moId}", devices, details, previous)
            if env.get("enable_cbt", True):
                snapshots.enable_cbt(si, vm, name)
            snap = self._create_snapshot(si, vm, props, snapshots.snapshot_name(workdir))
            details["snapshot_moref"] = snap._moId
            try:
                devices = properties(si, snap, ["config.hardware.device"]).get("config.hardware.device") or []
                return self._snapshot(instance, snap._moId, devices, details, previous)
            except BaseException:
                snapshots.remove_snapshot(si, vm, snap._moId, name)  # nothing may outlive a failed call
                raise

    @staticmethod
    def _create_snapshot(si: vim.ServiceInstance, vm: Any, props: dict[str, Any], snap_name: str) -> Any:
        name = props["name"]
        quiesce = (
            props.get("runtime.powerState") == "poweredOn"
            and props.get("guest.toolsRunningStatus") == "guestToolsRunning"
        )
        try:
            return snapshots.create_snapshot(si, vm, snap_name, name, quiesce)
        except ProviderError:
            if not quiesce:
                raise
        # Quiescing fails on some guests (no VSS writers, frozen filesystems): a crash-consistent
        # snapshot is still a valid migration source.
        return snapshots.create_snapshot(si, vm, snap_name, name, False)

    @staticmethod
    def _snapshot(
        instance: str,
        snapshot_id: str,
        devices: list[Any],
        details: dict[str, Any],
        previous: Mapping[str, str],
    ) -> SourceSnapshot:
        disks = []
        change_ids: dict[str, str] = {}
        for index, disk in enumerate(inventory.disks_of(devices)):
            info = inventory.disk_info(disk)
            change_id = getattr(disk.backing, "changeId", None) or None
            if change_id:
                change_ids[info.id] = change_id
            disks.append(
                DiskLocator(
                    disk_id=info.id,
                    size_bytes=info.size_bytes,
                    format="raw",  # what open_disk yields: guest-visible bytes
                    path=info.path,
                    details={
                        "device_key": disk.key,
                        "index": index,
                        "file_name": info.path,
                        "change_id": change_id,
                        "previous_change_id": previous.get(info.id),
                        # A transfer's marker: the next execution asks CBT what changed since it.
                        **({"change_marker": change_id} if change_id else {}),
                    },
                )
            )
        return SourceSnapshot(
            instance=instance,
            snapshot_id=snapshot_id,
            disks=disks,
            details={**details, "change_ids": change_ids},
        )

    def source_host(self, snapshot: SourceSnapshot) -> str | None:
        host = snapshot.details.get("esx_host")
        return f"vsphere:{self._endpoint.where}/{host}" if host else None

    @translate_faults("open a vSphere disk for export")
    def open_disk(self, snapshot: SourceSnapshot, disk: DiskLocator) -> DiskSource:
        ep = self._endpoint
        si = connect(ep)
        lease: Lease | None = None
        try:
            vm = vim.VirtualMachine(snapshot.details["vm_moref"], si._stub)
            snap_moid = snapshot.details.get("snapshot_moref")
            snap = vim.vm.Snapshot(snap_moid, si._stub) if snap_moid else None
            extents, changed_since = self._extents(vm, snap, disk)
            if snapshot.details.get("transport", "nfc") == "nfc":
                exporter = snap.ExportSnapshot() if snap is not None else vm.ExportVm()
                lease = Lease(si, exporter, snapshot.details.get("vm_name", vm._moId))
                index = int(disk.details["index"])
                if index >= len(lease.disk_urls):
                    raise ProviderError(f"the export lease offers no URL for disk {disk.disk_id}")
                url = lease_url(lease.disk_urls[index], ep.where)
            else:
                url = datastore_url(ep.where, snapshot.details["datacenter"], disk.details["file_name"])
            cookie = session_cookie(si)

            def open_reader(u: str) -> HttpRangeReader:
                return HttpRangeReader(u, cookie=cookie, ssl_context=ep.ssl_context())

            def release(lease: Lease | None = lease) -> None:
                if lease is not None:
                    lease.complete()
                with contextlib.suppress(Exception):
                    Disconnect(si)

            spool = None
            if lease is not None and snapshot.details.get("workdir"):
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{snapshot.snapshot_id}-{disk.disk_id}")
                spool = Path(snapshot.details["workdir"]) / f"vsphere-{name}.vmdk"
                spool.parent.mkdir(parents=True, exist_ok=True)
            return VsphereDiskSource(
                open_reader(url),
                disk.size_bytes,
                extents,
                on_close=release,
                open_reader=open_reader,
                spool=spool,
                changed_since=changed_since,
            )
        except BaseException:
            if lease is not None:
                lease.abort()
            with contextlib.suppress(Exception):
                Disconnect(si)
            raise

    @staticmethod
    def _extents(vm: Any, snap: Any, disk: DiskLocator) -> tuple[list[Extent] | None, str | None]:
        """CBT areas to read, and the changeId they are relative to (``None``: a full copy).

        A first copy reads the allocated areas (``"*"``); an incremental one the areas changed
        since the previous copy's changeId.
        """
        change_id = disk.details.get("change_id")
        if snap is None or not change_id:
            return None, None  # no CBT: the whole disk (or a sparse VMDK's grains)
        previous = disk.details.get("previous_change_id")
        key = int(disk.details["device_key"])
        try:
            return snapshots.changed_areas(vm, snap, key, disk.size_bytes, previous or "*"), previous
        except ProviderError:
            if previous:
                # The baseline is unknown to vSphere (CBT was reset): everything may have changed.
                return [Extent(0, disk.size_bytes)], previous
            return None, None

    @translate_faults("query changed blocks of a vSphere disk")
    def changed_extents(self, snapshot: SourceSnapshot, disk: DiskLocator, marker: str) -> list[Extent] | None:
        snap_moid = snapshot.details.get("snapshot_moref")
        if not snap_moid or not disk.details.get("change_id"):
            return None  # a template or a disk without CBT
        with session(self.connection_info) as si:
            vm = vim.VirtualMachine(snapshot.details["vm_moref"], si._stub)
            snap = vim.vm.Snapshot(snap_moid, si._stub)
            try:
                return snapshots.changed_areas(vm, snap, int(disk.details["device_key"]), disk.size_bytes, marker)
            except ProviderError:
                return None  # the baseline is unknown to vSphere (CBT was reset): compare everything

    @translate_faults("remove a vSphere snapshot")
    def delete_snapshot(self, snapshot: SourceSnapshot) -> None:
        snap_moid = snapshot.details.get("snapshot_moref")
        if not snap_moid:
            return  # a template: nothing was created
        with session(self.connection_info) as si:
            vm = vim.VirtualMachine(snapshot.details["vm_moref"], si._stub)
            snapshots.remove_snapshot(si, vm, snap_moid, snapshot.details.get("vm_name", vm._moId))


def _datacenter_name(si: vim.ServiceInstance, obj: Any) -> str:
    """Name of the datacenter that holds ``obj`` (the ``dcPath`` of datastore URLs)."""
    current = obj
    for _ in range(64):
        parent = properties(si, current, ["parent"]).get("parent")
        if parent is None:
            break
        if isinstance(parent, vim.Datacenter):
            return str(properties(si, parent, ["name"])["name"])
        current = parent
    return ""


def _host_name(si: vim.ServiceInstance, vm: Any) -> str | None:
    """The name of the ESXi host running ``vm`` (None when vCenter does not say: then no limit applies)."""
    host = properties(si, vm, ["runtime.host"]).get("runtime.host")
    return str(properties(si, host, ["name"])["name"]) if host is not None else None
