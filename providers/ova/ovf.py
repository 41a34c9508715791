"""OVF envelope parsing (OVF 1.x/2.x as written by vSphere, ovftool and VirtualBox).

Elements and attributes are matched by local name, so the OVF 1 (``rasd:Item``) and OVF 2
(``StorageItem``/``EthernetPortItem``) spellings, and vendor namespaces, all parse the same way.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from core.errors import InvalidInput

# CIM ResourceType values used by OVF hardware items
CPU, MEMORY, IDE, SCSI, ETHERNET, DISK, SATA, NVME = 3, 4, 5, 6, 10, 17, 20, 21

_UNITS = re.compile(r"^\s*byte\s*(?:\*\s*(\d+)\s*\^\s*(\d+))?\s*$", re.I)
_NAMED_UNITS = {
    "kilobytes": 2**10,
    "kb": 2**10,
    "megabytes": 2**20,
    "mb": 2**20,
    "gigabytes": 2**30,
    "gb": 2**30,
}


@dataclass
class OvfDisk:
    disk_id: str
    capacity: int  # bytes
    file_href: str | None
    format: str
    controller: str | None = None
    unit: int | None = None


@dataclass
class OvfNic:
    network: str
    mac: str = ""
    name: str | None = None
    instance_id: str | None = None


@dataclass
class OvfFile:
    href: str
    size: int | None
    compression: str | None
    chunk_size: int | None


@dataclass
class OvfDescriptor:
    name: str
    num_cpu: int = 1
    memory_mb: int = 0
    firmware: str = "BIOS"
    secure_boot: bool = False
    guest_id: str | None = None
    os_description: str | None = None
    disks: list[OvfDisk] = field(default_factory=list)
    nics: list[OvfNic] = field(default_factory=list)
    controllers: list[dict[str, str | None]] = field(default_factory=list)
    files: dict[str, OvfFile] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)

    @property
    def os_type(self) -> str:
        text = f"{self.guest_id or ''} {self.os_description or ''}".lower()
        return "windows" if "win" in text else "linux"


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _attr(el: ET.Element, name: str) -> str | None:
    for key, value in el.attrib.items():
        if _local(key) == name:
            return value
    return None


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _descendants(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el.iter() if _local(c.tag) == name]


def _text(el: ET.Element, name: str) -> str | None:
    for c in el:
        if _local(c.tag) == name and c.text is not None:
            return c.text.strip()
    return None


def _scale(units: str | None, what: str) -> int:
    """Bytes per unit for an OVF allocation-units string ("byte * 2^20", "MegaBytes")."""
    if not units:
        return 1
    match = _UNITS.match(units)
    if match:
        return int(match.group(1)) ** int(match.group(2)) if match.group(1) else 1
    if units.strip().lower() in _NAMED_UNITS:
        return _NAMED_UNITS[units.strip().lower()]
    raise InvalidInput(f"unsupported OVF allocation units {units!r} for {what}")


def _int(value: str | None, what: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"OVF {what} is not a number: {value!r}") from None


def _mac(raw: str | None) -> str:
    hexdigits = re.sub(r"[^0-9a-fA-F]", "", raw or "")
    if len(hexdigits) != 12:
        return ""
    return ":".join(hexdigits[i : i + 2] for i in range(0, 12, 2)).lower()


def parse(xml: bytes, source: str) -> OvfDescriptor:
    """Parse one OVF descriptor; ``source`` names it in error messages."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InvalidInput(f"{source}: the OVF descriptor is not valid XML ({exc})") from None
    if _local(root.tag) != "Envelope":
        raise InvalidInput(f"{source}: not an OVF envelope (root element {_local(root.tag)})")
    systems = _descendants(root, "VirtualSystem")
    if len(systems) != 1:
        raise InvalidInput(f"{source}: expected one VirtualSystem, found {len(systems)}")
    system = systems[0]
    desc = OvfDescriptor(name=_text(system, "Name") or _attr(system, "id") or source)

    for ref in _descendants(root, "References"):
        for f in _children(ref, "File"):
            href, file_id = _attr(f, "href"), _attr(f, "id")
            if not href or not file_id:
                continue
            size, chunk = _attr(f, "size"), _attr(f, "chunkSize")
            desc.files[file_id] = OvfFile(
                href=href,
                size=_int(size, "file size") if size else None,
                compression=_attr(f, "compression"),
                chunk_size=_int(chunk, "chunk size") if chunk else None,
            )
    desc.networks = [n for n in (_attr(el, "name") for el in _descendants(root, "Network")) if n]

    disks: dict[str, OvfDisk] = {}
    for section in _descendants(root, "DiskSection"):
        for d in _children(section, "Disk"):
            disk_id = _attr(d, "diskId") or ""
            capacity = _attr(d, "capacity") or ""
            if capacity.startswith("${"):
                raise InvalidInput(
                    f"{source}: disk {disk_id} takes its capacity from a property ({capacity})"
                )
            scale = _scale(_attr(d, "capacityAllocationUnits"), f"disk {disk_id}")
            disks[disk_id] = OvfDisk(
                disk_id=disk_id,
                capacity=_int(capacity, f"capacity of disk {disk_id}") * scale,
                file_href=_attr(d, "fileRef"),
                format=_attr(d, "format") or "",
            )

    _parse_os(system, desc)
    _parse_hardware(system, desc, disks, source)
    # Disks not attached to any controller item still belong to the machine.
    desc.disks.extend(d for d in disks.values() if d not in desc.disks)
    return desc


def _parse_os(system: ET.Element, desc: OvfDescriptor) -> None:
    for section in _children(system, "OperatingSystemSection"):
        desc.guest_id = _attr(section, "osType") or desc.guest_id
        desc.os_description = _text(section, "Description")
        vbox = _text(section, "OSType")  # VirtualBox: <vbox:OSType>Ubuntu_64</vbox:OSType>
        if not desc.guest_id:
            desc.guest_id = vbox or (f"cim-{_attr(section, 'id')}" if _attr(section, "id") else None)
    # VirtualBox keeps its own machine config; firmware and MACs live there.
    for fw in _descendants(system, "Firmware"):
        if (_attr(fw, "type") or "").upper().startswith("EFI"):
            desc.firmware = "EFI"


def _parse_hardware(system: ET.Element, desc: OvfDescriptor, disks: dict[str, OvfDisk], source: str) -> None:
    items: list[ET.Element] = []
    for section in _children(system, "VirtualHardwareSection"):
        items += [c for c in section if _local(c.tag) in ("Item", "StorageItem", "EthernetPortItem")]
        for cfg in _children(section, "Config"):  # vmw:Config key/value pairs
            key, value = _attr(cfg, "key"), (_attr(cfg, "value") or "").lower()
            if key == "firmware" and value == "efi":
                desc.firmware = "EFI"
            if key == "bootOptions.efiSecureBootEnabled" and value == "true":
                desc.secure_boot = True
    for item in items:
        kind = _int(_text(item, "ResourceType") or "0", "ResourceType")
        if kind == CPU:
            desc.num_cpu = _int(_text(item, "VirtualQuantity") or "1", "CPU count")
        elif kind == MEMORY:
            quantity = _int(_text(item, "VirtualQuantity") or "0", "memory size")
            units = _text(item, "AllocationUnits") or "byte * 2^20"
            desc.memory_mb = quantity * _scale(units, "memory") // 2**20
        elif kind in (IDE, SCSI, SATA, NVME):
            desc.controllers.append(
                {
                    "id": _text(item, "InstanceID"),
                    "type": {IDE: "ide", SCSI: "scsi", SATA: "sata", NVME: "nvme"}[kind],
                    "subtype": _text(item, "ResourceSubType"),
                }
            )
        elif kind == ETHERNET:
            desc.nics.append(
                OvfNic(
                    network=_text(item, "Connection") or "",
                    mac=_mac(_text(item, "Address")),
                    name=_text(item, "ElementName"),
                    instance_id=_text(item, "InstanceID"),
                )
            )
        elif kind == DISK:
            host = _text(item, "HostResource") or ""
            disk = disks.get(host.rsplit("/", 1)[-1])
            if disk is None:
                raise InvalidInput(f"{source}: disk item refers to unknown disk {host!r}")
            disk.controller = _text(item, "Parent")
            address = _text(item, "AddressOnParent")
            disk.unit = _int(address, "disk unit") if address else None
            desc.disks.append(disk)
    _vbox_macs(system, desc)


def _vbox_macs(system: ET.Element, desc: OvfDescriptor) -> None:
    """Fill NIC MACs from VirtualBox's machine section (its rasd items carry none)."""
    adapters = [
        a
        for a in _descendants(system, "Adapter")
        if (_attr(a, "enabled") or "true") == "true" and _attr(a, "MACAddress")
    ]
    adapters.sort(key=lambda a: _int(_attr(a, "slot") or "0", "adapter slot"))
    for nic, adapter in zip([n for n in desc.nics if not n.mac], adapters, strict=False):
        nic.mac = _mac(_attr(adapter, "MACAddress"))
