"""Guest inspection on a ``Guest`` tree: OS, firmware, bootloader, kernels, agents, network style.

Everything here reads files only, so it runs the same on a plain directory (tests) and on a real image
mounted through libguestfs; libguestfs' own inspection results come in as ``hints`` and win where they
are better informed (the real root device, Windows registry data).
"""

from __future__ import annotations

import re
import struct
from typing import Any

from osmorphing.guest import Guest, find_case_insensitive
from osmorphing.models import OsInfo
from osmorphing.netconf import read_network
from osmorphing.windows import inspect_windows

FAMILIES = {
    "debian": "debian",
    "ubuntu": "debian",
    "rhel": "redhat",
    "centos": "redhat",
    "rocky": "redhat",
    "almalinux": "redhat",
    "ol": "redhat",
    "fedora": "redhat",
    "amzn": "redhat",
    "sles": "suse",
    "sled": "suse",
    "opensuse": "suse",
    "opensuse-leap": "suse",
    "opensuse-tumbleweed": "suse",
    "suse": "suse",
}

#: files whose presence shows an agent is installed (any one is enough)
AGENT_MARKERS: dict[str, tuple[str, ...]] = {
    "open-vm-tools": (
        "/usr/bin/vmtoolsd",
        "/etc/vmware-tools/tools.conf",
        "/etc/vmware-tools",
        "/lib/systemd/system/open-vm-tools.service",
        "/usr/lib/systemd/system/vmtoolsd.service",
    ),
    "hyperv-daemons": (
        "/usr/sbin/hv_kvp_daemon",
        "/usr/sbin/hypervkvpd",
        "/usr/lib/systemd/system/hypervkvpd.service",
        "/lib/systemd/system/hv-kvp-daemon.service",
    ),
    "waagent": ("/usr/sbin/waagent", "/etc/waagent.conf"),
    "cloud-init": ("/usr/bin/cloud-init", "/etc/cloud/cloud.cfg"),
    "google-guest-agent": (
        "/usr/bin/google_guest_agent",
        "/usr/lib/systemd/system/google-guest-agent.service",
        "/lib/systemd/system/google-guest-agent.service",
    ),
    "qemu-guest-agent": (
        "/usr/bin/qemu-ga",
        "/usr/sbin/qemu-ga",
        "/usr/lib/systemd/system/qemu-guest-agent.service",
        "/lib/systemd/system/qemu-guest-agent.service",
    ),
}

#: ELF e_machine → architecture name as libguestfs reports it
ELF_MACHINES = {
    0x03: "i386",
    0x3E: "x86_64",
    0xB7: "aarch64",
    0x28: "arm",
    0x15: "ppc64",
    0xF3: "riscv64",
    0x16: "s390x",
}


def inspect_guest(guest: Guest, hints: dict[str, Any] | None = None) -> OsInfo:
    """Inspect the mounted guest. ``hints`` are libguestfs inspection results (see ``libguestfs_guest``)."""
    hints = hints or {}
    if hints.get("type") == "windows" or find_case_insensitive(guest, "/Windows/System32/config/SOFTWARE"):
        return inspect_windows(guest, hints)
    if not (
        guest.is_dir("/etc")
        and (
            guest.exists("/etc/os-release")
            or guest.exists("/usr/lib/os-release")
            or guest.exists("/etc/redhat-release")
            or guest.exists("/etc/debian_version")
        )
    ):
        return OsInfo()
    return _inspect_linux(guest, hints)


def _inspect_linux(guest: Guest, hints: dict[str, Any]) -> OsInfo:
    release = read_os_release(guest)
    distro = release.get("ID", "").lower()
    like = release.get("ID_LIKE", "").lower().split()
    if not distro:
        distro = _legacy_distro(guest)
    family = FAMILIES.get(distro) or next((FAMILIES[x] for x in like if x in FAMILIES), "unknown")
    if distro.startswith("opensuse"):
        family = "suse"
    version = release.get("VERSION_ID", "")
    if distro == "debian" and guest.is_file("/etc/debian_version"):
        precise = guest.read_text("/etc/debian_version").strip()
        if re.fullmatch(r"\d+(\.\d+)*", precise):
            version = precise
    fstab = read_fstab(guest)
    net = read_network(guest)
    info = OsInfo(
        os_type="linux",
        family=family,
        distribution=distro or "unknown",
        version=version,
        friendly_name=release.get("PRETTY_NAME") or release.get("NAME", ""),
        architecture=hints.get("arch") or _architecture(guest),
        firmware=_firmware(guest, fstab, hints),
        root_filesystem=hints.get("root") or fstab.get("/"),
        boot_filesystem=hints.get("boot") or fstab.get("/boot"),
        bootloader=_bootloader(guest),
        kernels=list_kernels(guest),
        initramfs_tool=_initramfs_tool(guest),
        agents=[name for name, paths in AGENT_MARKERS.items() if any(guest.exists(p) for p in paths)],
        network_styles=net.styles,
        interfaces=net.interfaces,
        package_format="deb"
        if guest.exists("/var/lib/dpkg/status")
        else "rpm"
        if guest.is_dir("/var/lib/rpm") or guest.is_dir("/usr/lib/sysimage/rpm")
        else None,
    )
    return info


def read_os_release(guest: Guest) -> dict[str, str]:
    """Key/values of ``/etc/os-release`` (or ``/usr/lib/os-release``)."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        if guest.is_file(path):
            from osmorphing.netconf import parse_shell_vars

            return parse_shell_vars(guest.read_text(path))
    return {}


def _legacy_distro(guest: Guest) -> str:
    if guest.is_file("/etc/redhat-release"):
        text = guest.read_text("/etc/redhat-release").lower()
        for key, name in (
            ("centos", "centos"),
            ("rocky", "rocky"),
            ("fedora", "fedora"),
            ("red hat", "rhel"),
        ):
            if key in text:
                return name
    if guest.is_file("/etc/SuSE-release"):
        return "sles"
    if guest.is_file("/etc/debian_version"):
        return "debian"
    return ""


def read_fstab(guest: Guest) -> dict[str, str]:
    """Mount point → device spec from ``/etc/fstab``."""
    mounts: dict[str, str] = {}
    if not guest.is_file("/etc/fstab"):
        return mounts
    for line in guest.read_text("/etc/fstab").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            mounts[fields[1]] = fields[0]
    return mounts


def list_kernels(guest: Guest) -> list[str]:
    """Installed kernel versions, from ``/boot/vmlinuz-<version>``."""
    kernels = []
    for name in guest.listdir("/boot"):
        m = re.fullmatch(r"(?:vmlinuz|vmlinux|Image)-(.+)", name)
        if m and "rescue" not in m.group(1):
            kernels.append(m.group(1))
    return sorted(kernels)


def _architecture(guest: Guest) -> str:
    for path in ("/usr/bin/sh", "/bin/sh", "/usr/bin/bash", "/bin/bash", "/usr/bin/ls", "/bin/ls"):
        if guest.is_file(path):
            head = guest.read_bytes(path)[:20]
            if head[:4] == b"\x7fELF" and len(head) >= 20:
                machine = struct.unpack("<H", head[18:20])[0]
                return ELF_MACHINES.get(machine, "unknown")
    for kernel in list_kernels(guest):
        for key, arch in (
            ("x86_64", "x86_64"),
            ("amd64", "x86_64"),
            ("aarch64", "aarch64"),
            ("arm64", "aarch64"),
            ("i686", "i386"),
        ):
            if key in kernel:
                return arch
    return "unknown"


def _firmware(guest: Guest, fstab: dict[str, str], hints: dict[str, Any]) -> str:
    if hints.get("firmware") in ("bios", "uefi"):
        return str(hints["firmware"])
    if "/boot/efi" in fstab or "/efi" in fstab or guest.listdir("/boot/efi/EFI"):
        return "uefi"
    if guest.is_dir("/boot/grub/i386-pc") or guest.is_dir("/boot/grub2/i386-pc"):
        return "bios"
    return "unknown"


def _bootloader(guest: Guest) -> str | None:
    for path in ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg", "/etc/default/grub"):
        if guest.exists(path):
            return "grub2"
    if guest.exists("/boot/grub/menu.lst"):
        return "grub-legacy"
    if guest.exists("/boot/efi/loader/loader.conf") or guest.exists("/boot/loader/loader.conf"):
        return "systemd-boot"
    return None


def _initramfs_tool(guest: Guest) -> str | None:
    if any(guest.exists(p) for p in ("/usr/sbin/update-initramfs", "/sbin/update-initramfs")):
        return "initramfs-tools"
    if any(guest.exists(p) for p in ("/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut")):
        return "dracut"
    if any(guest.exists(p) for p in ("/sbin/mkinitrd", "/usr/sbin/mkinitrd")):
        return "mkinitrd"
    return None
