"""The ``ova`` provider: OVA/OVF packages in a directory as a migration source.

``connection_info`` is ``{"path": "/dir/with/ovas"}``; every ``.ova`` and ``.ovf`` file there is
an instance, named by its file name (or its VirtualSystem name). Disks are read in place: a
streamOptimized/sparse VMDK is decoded grain by grain (``providers.vsphere.vmdk``), a raw disk
file is read as is. A package is immutable, so its "snapshot" only records the file's size and
mtime, and reading refuses a package that changed since.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from core.errors import ConnectionFailed, InvalidInput, NotFound, TransferError
from core.models import DiskInfo, DiskLocator, InstanceInfo, NicInfo, SourceSnapshot
from diskio.base import DiskSource, Extent
from providers.base import (
    NO_ACTION,
    ActionContext,
    EndpointProvider,
    ExportProvider,
)
from providers.ova import ovf
from providers.ova.package import Package
from providers.vsphere.files import FileSlice
from providers.vsphere.vmdk import SparseVmdk, is_sparse_vmdk

_SUFFIXES = (".ova", ".ovf")


class OvaDiskSource(DiskSource):
    """Guest bytes of one disk file of a package."""

    def __init__(self, data: FileSlice, capacity: int) -> None:
        self._capacity = capacity
        self._data = data
        self._vmdk: SparseVmdk | None = None
        head = data.read_at(0, 512)
        if is_sparse_vmdk(head):
            self._vmdk = SparseVmdk(data)
            if self._vmdk.size > capacity:
                raise InvalidInput(f"the VMDK holds {self._vmdk.size} bytes, more than the OVF's {capacity}")
        elif head.startswith(b"QFI\xfb") or head.startswith(b"# Disk DescriptorFile"):
            raise InvalidInput("only sparse/streamOptimized VMDK and raw disk files are supported")

    @property
    def size(self) -> int:
        return self._capacity

    def extents(self) -> list[Extent]:
        if self._vmdk is not None:
            return self._vmdk.extents()
        return [Extent(0, min(self._capacity, self._data.size))] if self._data.size else []

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._capacity - offset))
        reader = self._vmdk.read if self._vmdk is not None else self._data.read_at
        return reader(offset, length).ljust(length, b"\0")


class OvaProvider(EndpointProvider, ExportProvider):
    """OVA/OVF packages (vSphere, ovftool, VirtualBox exports) as a migration source."""

    PLUGIN_NAME: ClassVar[str] = "ova"

    @classmethod
    def connection_info_schema(cls) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"path": {"type": "string", "description": "directory holding .ova/.ovf files"}},
            "required": ["path"],
        }

    @property
    def _dir(self) -> Path:
        path = self.connection_info.get("path")
        if not path:
            raise InvalidInput("ova connection_info needs a 'path' (a directory of .ova/.ovf files)")
        return Path(path)

    def validate_connection(self) -> None:
        if not self._dir.is_dir():
            raise ConnectionFailed(f"OVA directory {self._dir} does not exist or is not a directory")
        if not os.access(self._dir, os.R_OK | os.X_OK):
            raise ConnectionFailed(f"OVA directory {self._dir} is not readable")

    def _packages(self) -> list[Path]:
        self.validate_connection()
        return sorted(p for p in self._dir.iterdir() if p.suffix.lower() in _SUFFIXES and p.is_file())

    def _load(self, path: Path) -> ovf.OvfDescriptor:
        package = Package(path)
        name, xml = package.descriptor()
        return ovf.parse(xml, f"{path.name}:{name}" if package.is_ova else path.name)

    def _find(self, instance: str) -> tuple[Path, ovf.OvfDescriptor]:
        for path in self._packages():
            if instance in (path.name, path.stem):
                return path, self._load(path)
        for path in self._packages():  # then by VirtualSystem name, which needs parsing
            desc = self._load(path)
            if desc.name == instance:
                return path, desc
        raise NotFound(f"no OVA/OVF package named {instance!r} in {self._dir}")

    @staticmethod
    def _info(path: Path, desc: ovf.OvfDescriptor) -> InstanceInfo:
        disks = [
            DiskInfo(
                id=d.disk_id,
                size_bytes=d.capacity,
                format="vmdk" if "vmdk" in d.format.lower() else "raw",
                path=desc.files[d.file_href].href if d.file_href in desc.files else None,
                unit_number=d.unit,
                controller_id=d.controller,
            )
            for d in desc.disks
        ]
        nics = [
            NicInfo(network_name=n.network, mac_address=n.mac, id=n.instance_id, name=n.name)
            for n in desc.nics
        ]
        return InstanceInfo(
            id=path.name,
            name=desc.name,
            instance_name=desc.name,
            num_cpu=desc.num_cpu,
            memory_mb=desc.memory_mb,
            os_type=desc.os_type,
            firmware_type="EFI" if desc.firmware == "EFI" else "BIOS",
            secure_boot=desc.secure_boot,
            guest_id=desc.guest_id,
            power_state="poweredOff",
            devices={"disks": disks, "nics": nics, "controllers": desc.controllers},
        )

    def list_instances(self, env: Mapping[str, Any], name_filter: str | None = None) -> list[InstanceInfo]:
        out = []
        for path in self._packages():
            info = self._info(path, self._load(path))
            if not name_filter or name_filter.lower() in f"{path.name} {info.name}".lower():
                out.append(info)
        return out

    def get_instance(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        return self._info(*self._find(instance))

    def validate_source(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        path, desc = self._find(instance)
        for disk in desc.disks:
            self._disk_file(path, desc, disk)  # every disk must be readable before we start
        return self._info(path, desc)

    @staticmethod
    def _disk_file(path: Path, desc: ovf.OvfDescriptor, disk: ovf.OvfDisk) -> ovf.OvfFile:
        if not disk.file_href or disk.file_href not in desc.files:
            raise InvalidInput(
                f"{path.name}: disk {disk.disk_id} has no file (blank disks are not supported)"
            )
        file = desc.files[disk.file_href]
        if file.compression and file.compression != "identity":
            raise InvalidInput(
                f"{path.name}: disk file {file.href} is {file.compression}-compressed (unsupported)"
            )
        if file.chunk_size:
            raise InvalidInput(f"{path.name}: disk file {file.href} is split in chunks (unsupported)")
        Package(path).open(file.href)  # raises NotFound when missing
        return file

    def snapshot_instance(self, env: Mapping[str, Any], instance: str, workdir: Path,
                          action: ActionContext = NO_ACTION) -> SourceSnapshot:
        path, desc = self._find(instance)
        st = path.stat()
        disks = [
            DiskLocator(
                disk_id=d.disk_id,
                size_bytes=d.capacity,
                format="raw",  # what open_disk yields: guest-visible bytes
                path=str(path),
                details={"href": self._disk_file(path, desc, d).href},
            )
            for d in desc.disks
        ]
        return SourceSnapshot(
            instance=instance,
            snapshot_id=f"ova:{path.name}:{st.st_mtime_ns}",
            disks=disks,
            details={"package": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns},
        )

    def open_disk(self, snapshot: SourceSnapshot, disk: DiskLocator) -> DiskSource:
        path = Path(snapshot.details["package"])
        try:
            st = path.stat()
        except FileNotFoundError:
            raise NotFound(f"OVA package {path} is gone") from None
        if (st.st_size, st.st_mtime_ns) != (snapshot.details["size"], snapshot.details["mtime_ns"]):
            raise TransferError(f"OVA package {path.name} changed since it was opened for export")
        return OvaDiskSource(Package(path).open(disk.details["href"]), disk.size_bytes)

    def delete_snapshot(self, snapshot: SourceSnapshot) -> None:
        """Nothing to remove: a package is its own point-in-time copy."""
