"""Detection on synthetic trees with each distribution's real file layout."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from osmorphing import DirectoryGuest, inspect_guest
from tests.guests.trees import KERNELS

LINUX_EXPECTED = {
    # name: (distribution, family, version, initramfs tool, agents, network styles, old interface, mode)
    "debian": (
        "debian",
        "debian",
        "12.4",
        "initramfs-tools",
        ["open-vm-tools"],
        ["ifupdown"],
        "ens192",
        "static",
    ),
    "ubuntu": (
        "ubuntu",
        "debian",
        "22.04",
        "initramfs-tools",
        ["open-vm-tools", "cloud-init"],
        ["netplan", "ifupdown"],
        "ens160",
        "static",
    ),
    "rhel": ("rhel", "redhat", "8.9", "dracut", ["open-vm-tools"], ["ifcfg"], "ens192", "static"),
    "centos": ("centos", "redhat", "7", "dracut", ["open-vm-tools"], ["ifcfg"], "ens192", "static"),
    "rocky": (
        "rocky",
        "redhat",
        "9.3",
        "dracut",
        ["open-vm-tools", "cloud-init"],
        ["networkmanager"],
        "ens192",
        "static",
    ),
    "fedora": (
        "fedora",
        "redhat",
        "39",
        "dracut",
        ["open-vm-tools", "qemu-guest-agent"],
        ["networkmanager"],
        "ens192",
        "static",
    ),
    "sles": ("sles", "suse", "15.5", "dracut", ["hyperv-daemons"], ["wicked"], "eth0", "static"),
    "opensuse": (
        "opensuse-leap",
        "suse",
        "15.5",
        "dracut",
        ["hyperv-daemons", "cloud-init"],
        ["wicked"],
        "eth0",
        "static",
    ),
}


@pytest.mark.parametrize("name", sorted(LINUX_EXPECTED))
def test_linux_detection(make_guest: Callable[[str], DirectoryGuest], name: str) -> None:
    distro, family, version, initramfs, agents, styles, iface, mode = LINUX_EXPECTED[name]
    info = inspect_guest(make_guest(name))
    assert info.os_type == "linux"
    assert (info.distribution, info.family, info.version) == (distro, family, version)
    assert info.architecture == "x86_64"
    assert info.firmware == "bios"
    assert info.bootloader == "grub2"
    assert info.initramfs_tool == initramfs
    assert info.kernels == [KERNELS[distro if distro != "opensuse-leap" else "opensuse-leap"]]
    assert info.agents == agents
    assert info.network_styles == styles
    assert [(i.name, i.mode) for i in info.interfaces] == [(iface, mode)]
    assert info.package_format == ("deb" if family == "debian" else "rpm")


def test_root_and_boot_filesystems_come_from_fstab(make_guest: Callable[[str], DirectoryGuest]) -> None:
    info = inspect_guest(make_guest("rhel"))
    assert (info.root_filesystem, info.boot_filesystem) == ("/dev/sda2", "/dev/sda1")


def test_static_details_and_mac_pins_are_read(make_guest: Callable[[str], DirectoryGuest]) -> None:
    debian = inspect_guest(make_guest("debian")).interfaces[0]
    assert (debian.addresses, debian.gateway) == (["10.20.30.40/24"], "10.20.30.1")
    ubuntu = inspect_guest(make_guest("ubuntu")).interfaces[0]
    assert (ubuntu.addresses, ubuntu.gateway, ubuntu.mac_address) == (
        ["192.168.50.10/24"],
        "192.168.50.1",
        "00:50:56:aa:bb:01",
    )
    rocky = inspect_guest(make_guest("rocky")).interfaces[0]
    assert (rocky.addresses, rocky.gateway, rocky.mac_address) == (
        ["172.16.9.20/24"],
        "172.16.9.1",
        "00:50:56:aa:bb:01",
    )
    sles = inspect_guest(make_guest("sles")).interfaces[0]
    assert (sles.addresses, sles.gateway) == (["10.9.8.7/24"], "10.9.8.1")


def test_uefi_is_detected_from_the_esp_mount(make_guest: Callable[[str], DirectoryGuest]) -> None:
    guest = make_guest("rhel")
    fstab = guest.read_text("/etc/fstab") + "UUID=ABCD-1234 /boot/efi vfat umask=0077 0 2\n"
    guest.write_text("/etc/fstab", fstab)
    guest.mkdir_p("/boot/efi/EFI/redhat")
    assert inspect_guest(guest).firmware == "uefi"


WINDOWS_EXPECTED = {
    # name: (product name, friendly name, edition, build, version, installation type)
    "windows2019": (
        "Windows Server 2019 Standard",
        "Windows Server 2019 Standard",
        "ServerStandard",
        "17763",
        "10.0",
        "Server",
    ),
    # Windows 11 still says "Windows 10" in ProductName; the build number gives it away.
    "windows11": ("Windows 10 Pro", "Windows 11 Pro", "Professional", "22631", "10.0", "Client"),
    "windows2012r2": (
        "Windows Server 2012 R2 Datacenter",
        "Windows Server 2012 R2 Datacenter",
        "ServerDatacenter",
        "9600",
        "6.3",
        "Server",
    ),
}


@pytest.mark.parametrize("name", sorted(WINDOWS_EXPECTED))
def test_windows_detection_reads_the_registry(make_guest: Callable[[str], DirectoryGuest], name: str) -> None:
    product, friendly, edition, build, version, kind = WINDOWS_EXPECTED[name]
    info = inspect_guest(make_guest(name))
    assert (info.os_type, info.family) == ("windows", "windows")
    assert info.windows_product_name == product
    assert info.friendly_name == friendly
    assert info.windows_edition == edition
    assert info.windows_build == build
    assert info.version == version
    assert info.windows_installation_type == kind
    assert info.architecture == "x86_64"


def test_an_empty_tree_is_no_os(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert inspect_guest(DirectoryGuest(tmp_path)).os_type == "unknown"
