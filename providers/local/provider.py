"""The ``local`` provider: a directory acting as a KVM host's inventory, as source and destination.

connection_info: ``{"path": "/var/lib/sterna/vms"}``.

* Source: the snapshot is a read-only sparse (reflink where the filesystem can) copy of each
  disk in the worker's scratch, so the VM may keep running; export reads its allocated extents.
  For a transfer, a qcow2 disk also gets a persistent dirty bitmap per transfer (``tracking``): the
  next execution reads only what it marks. Raw disks have none: their replicas compare digests.
* Destination: each migrated instance becomes ``<path>/<instance>/`` with qcow2 disks, a
  libvirt ``domain.xml`` (virtio devices, mapped networks, flavor CPU/memory) and a ``vm.json``,
  so the result is itself a valid ``local`` inventory entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from core.children import die_with_parent
from core.errors import InvalidInput, NotFound, ProviderError
from core.models import (
    DeployedInstance,
    DiskLocator,
    ImportedDisk,
    InstanceInfo,
    NetworkInfo,
    OptionValues,
    SourceSnapshot,
    StorageBackend,
    StorageInfo,
)
from diskio.base import DiskSource, Extent
from providers.base import (
    NO_ACTION,
    ActionContext,
    BootVerifier,
    ChangeTrackingSource,
    DestinationOptionsProvider,
    EndpointProvider,
    ExportProvider,
    ImportProvider,
    NetworksProvider,
    ReplicaProvider,
    StorageProvider,
    TransferContext,
    TransferProgress,
)
from providers.local import tracking
from providers.local.confine import endpoint_root, file_name
from providers.local.domain import FLAVORS, domain_xml, stable_mac
from providers.local.inventory import VM_FILE, Inventory

OWNER_FILE = ".sterna-migration"
#: replica disks of transfers, inside the destination inventory (no vm.json: never listed as a VM)
REPLICAS_DIR = ".sterna-replicas"


class LocalProvider(
    EndpointProvider, ExportProvider, ImportProvider, NetworksProvider, StorageProvider, DestinationOptionsProvider,
    BootVerifier, ReplicaProvider, ChangeTrackingSource,
):
    PLUGIN_NAME = "local"
    TARGET_DISK_FORMAT = "qcow2"
    TARGET_PLATFORM = "kvm"

    def __init__(self, connection_info: Mapping[str, Any]) -> None:
        super().__init__(connection_info)
        path = self.connection_info.get("path")
        if not isinstance(path, str) or not path:
            raise InvalidInput("local connection_info needs a 'path' (a directory)")
        endpoint_root(path)
        self.root = Path(path)
        self.inventory = Inventory(self.root)

    @classmethod
    def connection_info_schema(cls) -> dict[str, Any]:
        return {
            "$schema": "http://cloudbase.it/coriolis/schemas/local#",
            "type": "object",
            "properties": {"path": {"type": "string", "description": "inventory directory"}},
            "required": ["path"],
            "additionalProperties": False,
        }

    @classmethod
    def destination_environment_schema(cls) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "flavor_name": {"type": "string", "enum": sorted(FLAVORS)},
                "num_cpu": {"type": "integer", "minimum": 1},
                "memory_mb": {"type": "integer", "minimum": 64},
                "network_map": {"type": "object"},
                "verify_boot": {"type": "boolean"},
                "boot_timeout": {"type": "number", "exclusiveMinimum": 0},
                # seconds after userspace to wait for the guest's DHCP lease and first frame
                "boot_network_grace": {"type": "number", "minimum": 0},
            },
        }

    # -- endpoint ----------------------------------------------------------------------------
    def validate_connection(self) -> None:
        if not self.root.is_dir():
            raise NotFound(f"Local inventory directory {self.root} does not exist")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise InvalidInput(f"Local inventory directory {self.root} is not readable")

    def list_instances(self, env: Mapping[str, Any], name_filter: str | None = None) -> list[InstanceInfo]:
        self.validate_connection()
        return self.inventory.list(name_filter)

    def get_instance(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        self.validate_connection()
        return self.inventory.get(instance)

    def list_networks(self, env: Mapping[str, Any]) -> list[NetworkInfo]:
        names = set(self.connection_info.get("networks", []))
        for vm in self.inventory.list() if self.root.is_dir() else []:
            names.update(nic.network_name for nic in vm.devices.nics)
        return [NetworkInfo(id=name, name=name) for name in sorted(names)]

    def list_storage(self, env: Mapping[str, Any]) -> StorageInfo:
        return StorageInfo(storage_backends=[StorageBackend(id="default", name=str(self.root))],
                           config_default="default")

    def destination_options(self, env: Mapping[str, Any]) -> list[OptionValues]:
        return [OptionValues(name="flavor_name", values=sorted(FLAVORS), config_default=None)]

    # -- source ------------------------------------------------------------------------------
    def snapshot_instance(self, env: Mapping[str, Any], instance: str, workdir: Path,
                          action: ActionContext = NO_ACTION) -> SourceSnapshot:
        info = self.get_instance(env, instance)
        snap_dir = workdir / "snapshot"
        snap_dir.mkdir(parents=True, exist_ok=True)
        disks = []
        for disk in info.devices.disks:
            assert disk.path is not None
            target = snap_dir / f"{file_name(disk.id)}.{disk.format}"
            tag = action.change_tracking if disk.format == "qcow2" else None
            if not target.exists():  # idempotent: a retried activity reuses a finished copy
                if tag:
                    tracking.start(Path(disk.path), str(tag))
                partial = target.with_suffix(target.suffix + ".partial")
                subprocess.run(["cp", "--reflink=auto", "--sparse=always", disk.path, str(partial)], check=True,
                               preexec_fn=die_with_parent)
                partial.chmod(0o444)
                partial.rename(target)
            marker = tracking.finish(Path(disk.path), target, str(tag)) if tag else None
            disks.append(DiskLocator(disk_id=disk.id, size_bytes=disk.size_bytes, format=disk.format,
                                     path=str(target), details={"change_marker": marker} if marker else {}))
        return SourceSnapshot(instance=instance, snapshot_id=str(snap_dir), disks=disks)

    def open_disk(self, snapshot: SourceSnapshot, disk: DiskLocator) -> DiskSource:
        from diskio.local import open_local_source

        assert disk.path is not None
        return open_local_source(disk.path, disk.format)

    def changed_extents(self, snapshot: SourceSnapshot, disk: DiskLocator, marker: str) -> list[Extent] | None:
        from diskio import bitmaps

        if disk.format != "qcow2" or disk.path is None or marker not in bitmaps.bitmaps(disk.path):
            return None
        return bitmaps.dirty_extents(disk.path, marker)

    def release_tracking(self, env: Mapping[str, Any], instance: str, transfer_id: str) -> list[str]:
        tag = transfer_id
        if not tag:
            return []
        removed: list[str] = []
        for disk in self.get_instance(env, instance).devices.disks:
            if disk.format == "qcow2" and disk.path is not None:
                removed += tracking.release(Path(disk.path), str(tag))
        return removed
    def source_host(self, snapshot: SourceSnapshot) -> str | None:
        # The inventory directory is the source's storage: its VMs' reads share its disk.
        return f"local:{self.root}"

    def delete_snapshot(self, snapshot: SourceSnapshot) -> None:
        shutil.rmtree(snapshot.snapshot_id, ignore_errors=True)

    # -- destination -------------------------------------------------------------------------
    def _target_dir(self, action: ActionContext, export_info: InstanceInfo) -> Path:
        return self.inventory.vm_dir(action.instance_name or export_info.name)

    def _claim(self, target: Path, migration_id: str) -> None:
        """Create the target folder, or accept it only if this migration created it."""
        owner = target / OWNER_FILE
        if target.exists():
            if not owner.exists() or owner.read_text().strip() != migration_id:
                raise InvalidInput(f"Destination instance folder {target} already exists")
            return
        target.mkdir(parents=True)
        owner.write_text(migration_id)

    def validate_destination(self, env: Mapping[str, Any], export_info: InstanceInfo,
                             action: ActionContext = NO_ACTION) -> None:
        if not self.root.is_dir():
            raise NotFound(f"Local destination directory {self.root} does not exist")
        if not os.access(self.root, os.W_OK):
            raise InvalidInput(f"Local destination directory {self.root} is not writable")
        flavor = env.get("flavor_name")
        if flavor and flavor not in FLAVORS and not env.get("num_cpu"):
            raise InvalidInput(f"Unknown flavor '{flavor}'. Known: {', '.join(sorted(FLAVORS))}")
        target = self._target_dir(action, export_info)
        owner = target / OWNER_FILE
        if action.replica_only:
            return  # a transfer execution: only replica disks are written, under REPLICAS_DIR
        if target.exists() and (not owner.exists() or owner.read_text().strip() != action.action_id):
            raise InvalidInput(f"An instance named '{target.name}' already exists at the destination")

    async def import_disk(
        self, env: Mapping[str, Any], export_info: InstanceInfo, disk: DiskLocator, ctx: TransferContext,
        action: ActionContext = NO_ACTION,
    ) -> ImportedDisk:
        from diskio.copier import copy_disk
        from diskio.local import LocalFileTarget, open_local_source

        assert disk.path is not None
        target_dir = self._target_dir(action, export_info)
        self._claim(target_dir, action.action_id or "")
        final = target_dir / f"{file_name(disk.disk_id)}.{self.TARGET_DISK_FORMAT}"
        src_path = Path(disk.path)
        if src_path.exists() and src_path.stat().st_dev == target_dir.stat().st_dev:
            # Same filesystem: the converted image is moved, not copied.
            os.replace(src_path, final)
            size = final.stat().st_size
            await ctx.progress(TransferProgress(bytes_done=size, bytes_total=size, checkpoint=[(0, size)]))
            await ctx.aevent(f"Moved {disk.disk_id} into {final}")
        elif not src_path.exists() and final.exists():
            # An earlier attempt moved it, and was killed before it could return; its heartbeat may
            # carry a checkpoint, but there is nothing left to copy from.
            await ctx.aevent(f"{disk.disk_id} was already moved into {final} by an earlier attempt")
        elif not final.exists() or ctx.checkpoint is not None:
            # An existing file and no checkpoint at all: an attempt that died after finishing it (the copier
            # writes its checkpoint file before its first write; an empty list means a copy was begun).
            # The image file is copied as bytes: qcow2 is sparse-friendly and resumable this way.
            source = open_local_source(src_path, "raw")
            target = LocalFileTarget(final, source.size)
            try:
                await copy_disk(source, target, checkpoint=ctx.checkpoint, on_progress=ctx.progress,
                                bandwidth_limit=ctx.bandwidth_limit, durable=ctx.durable)
            finally:
                source.close()
                target.close()
            await ctx.aevent(f"Copied {disk.disk_id} into {final}")
        return ImportedDisk(disk_id=disk.disk_id, details={"path": str(final), "format": self.TARGET_DISK_FORMAT})

    def _flavor(self, env: Mapping[str, Any], info: InstanceInfo) -> tuple[int, int]:
        if env.get("num_cpu") or env.get("memory_mb"):
            return int(env.get("num_cpu") or info.num_cpu), int(env.get("memory_mb") or info.memory_mb)
        flavor = env.get("flavor_name")
        if flavor:
            return FLAVORS[flavor]
        return info.num_cpu, info.memory_mb

    def deploy_instance(
        self, env: Mapping[str, Any], export_info: InstanceInfo, disks: list[ImportedDisk],
        action: ActionContext = NO_ACTION,
    ) -> DeployedInstance:
        target_dir = self._target_dir(action, export_info)
        num_cpu, memory_mb = self._flavor(env, export_info)
        network_map = action.network_map
        seed = f"{action.action_id}/{export_info.name}"
        nics = [(str(network_map.get(nic.network_name, nic.network_name)), stable_mac(f"{seed}/{i}"))
                for i, nic in enumerate(export_info.devices.nics)]
        disk_files = [(d.details["path"], d.details["format"]) for d in disks]
        xml = domain_xml(export_info, name=target_dir.name, num_cpu=num_cpu, memory_mb=memory_mb,
                         disks=disk_files, nics=nics)
        (target_dir / "domain.xml").write_text(xml)
        vm = {
            "name": target_dir.name,
            "num_cpu": num_cpu,
            "memory_mb": memory_mb,
            "firmware": export_info.firmware_type,
            "os_type": export_info.os_type,
            "nics": [{"network_name": net, "mac_address": mac} for net, mac in nics],
            "disks": [{"id": d.disk_id, "file": Path(d.details["path"]).name, "format": d.details["format"]}
                      for d in disks],
            "migrated_from": export_info.id,
        }
        (target_dir / VM_FILE).write_text(json.dumps(vm, indent=2) + "\n")
        return DeployedInstance(instance=export_info.name, id=target_dir.name, name=target_dir.name,
                                details={"path": str(target_dir), "domain_xml": str(target_dir / "domain.xml"),
                                         "num_cpu": num_cpu, "memory_mb": memory_mb,
                                         "firmware": export_info.firmware_type,
                                         "disks": [d.details for d in disks]})

    def verify_boot(self, env: Mapping[str, Any], deployed: DeployedInstance, timeout: float,
                    on_stage: Callable[[str], None] | None = None) -> list[str]:
        """Boot the first disk under QEMU (TCG, virtio disk and NIC on a network the check owns) and watch
        its console and NIC from the host (``providers.local.boot``)."""
        from providers.local.boot import boot_check, boot_verdict

        disks = deployed.details.get("disks") or []
        if not disks:
            raise ProviderError(f"Instance {deployed.name} has no disk to boot")
        workdir = Path(deployed.details["path"]) / ".boot-check"
        firmware = "uefi" if deployed.details.get("firmware") == "EFI" else "bios"

        def stage(name: str, at: float, what: str) -> None:
            if on_stage is not None:
                on_stage(f"{name} at {at:.0f}s ({what})")

        result = boot_check(disks[0]["path"], disks[0]["format"], timeout=timeout, workdir=workdir,
                            firmware=firmware, network_grace=float(env.get("boot_network_grace", 120)),
                            on_progress=stage)
        return boot_verdict(result)

    def cleanup(
        self,
        env: Mapping[str, Any],
        instance: str,
        disks: list[ImportedDisk],
        deployed: DeployedInstance | None,
        succeeded: bool,
        action: ActionContext = NO_ACTION,
    ) -> list[str]:
        if succeeded:
            return []
        target = self.inventory.vm_dir(action.instance_name or instance)
        owner = target / OWNER_FILE
        if owner.exists() and owner.read_text().strip() == (action.action_id or ""):
            shutil.rmtree(target, ignore_errors=True)
            return [f"Removed partial destination instance {target}"]
        return []

    # -- replica disks -----------------------------------------------------------------------
    def _replica_dir(self, transfer_id: str) -> Path:
        return self.root / REPLICAS_DIR / self.inventory.vm_dir(transfer_id).name

    def replica_disk(self, env: Mapping[str, Any], transfer_id: str, instance: str, disk_id: str,
                     size_bytes: int) -> DiskLocator:
        folder = self._replica_dir(transfer_id) / self.inventory.vm_dir(instance).name
        folder.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in disk_id)
        return DiskLocator(disk_id=disk_id, size_bytes=size_bytes, format="raw", path=str(folder / f"{safe}.raw"))

    def delete_replica_disks(self, env: Mapping[str, Any], transfer_id: str) -> list[str]:
        folder = self._replica_dir(transfer_id)
        if not folder.exists():
            return []
        shutil.rmtree(folder, ignore_errors=True)
        # The last transfer's replicas gone, the inventory holds only instances again (a migration
        # that ran as a transfer leaves nothing but its instance).
        with contextlib.suppress(OSError):
            folder.parent.rmdir()
        return [f"Removed replica disks {folder}"]
