"""libvirt domain XML for a migrated instance: virtio disk and NICs, the flavor's CPU and memory."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

from core.models import InstanceInfo

#: OpenStack's classic flavors, so a ``flavor_name`` from an OpenStack-minded script maps here too
FLAVORS: dict[str, tuple[int, int]] = {
    "m1.tiny": (1, 512),
    "m1.small": (1, 2048),
    "m1.medium": (2, 4096),
    "m1.large": (4, 8192),
    "m1.xlarge": (8, 16384),
}


def stable_mac(seed: str) -> str:
    """A KVM-range MAC (52:54:00) derived from ``seed``, so retries produce the same one."""
    digest = hashlib.sha256(seed.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def domain_xml(
    info: InstanceInfo,
    *,
    name: str,
    num_cpu: int,
    memory_mb: int,
    disks: list[tuple[str, str]],
    nics: list[tuple[str, str]],
) -> str:
    """``disks`` are (path, format); ``nics`` are (libvirt network, mac)."""
    dom = ET.Element("domain", type="kvm")
    ET.SubElement(dom, "name").text = name
    ET.SubElement(dom, "memory", unit="MiB").text = str(memory_mb)
    ET.SubElement(dom, "vcpu").text = str(num_cpu)
    os_el = ET.SubElement(dom, "os", firmware="efi") if info.firmware_type == "EFI" else ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="q35").text = "hvm"
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    devices = ET.SubElement(dom, "devices")
    for index, (path, fmt) in enumerate(disks):
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type=fmt)
        ET.SubElement(disk, "source", file=path)
        ET.SubElement(disk, "target", dev=f"vd{chr(ord('a') + index)}", bus="virtio")
    for network, mac in nics:
        iface = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(iface, "mac", address=mac)
        ET.SubElement(iface, "source", network=network)
        ET.SubElement(iface, "model", type="virtio")
    ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(devices, "console", type="pty")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"
