"""The real proof: a VMware-style Debian guest, morphed with libguestfs, boots on KVM devices with DHCP.

The guest (tests/guests/debian.py) is exported as a streamOptimized VMDK the way vSphere exports it,
converted back to a raw disk (what a local → local migration does), and then:

* morphed for ``kvm``: it boots under QEMU TCG with a virtio disk and a virtio NIC on user-mode
  networking, gets 10.0.2.15 by DHCP and prints it on the serial console;
* not morphed (``skip_os_morphing``): it boots to userspace too, but its network configuration still
  names ``ens192`` pinned to a VMware MAC, so no address comes, and the guest says so on the console.

Slow: building the guest the first time (~4 min, then cached), the morph (libguestfs under TCG, several
minutes: it regenerates the initramfs and GRUB config inside the guest) and two TCG boots (~1-2.5 min
each).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from osmorphing import MorphOptions, morph_image
from providers.local.boot import boot_check
from tests.guests.debian import (
    OLD_NIC,
    ROOT_UUID,
    VMWARE_MAC,
    build_debian_guest,
    export_stream_optimized_vmdk,
)

pytestmark = pytest.mark.slow

BOOT_TIMEOUT = 600.0


@pytest.fixture(scope="module")
def migrated_disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The guest as VMware exports it, then converted to two raw target disks (to morph, and not)."""
    work = tmp_path_factory.mktemp("debian-guest")
    vmdk = export_stream_optimized_vmdk(build_debian_guest(), work / "disk-0.vmdk")
    info = subprocess.run(["qemu-img", "info", str(vmdk)], capture_output=True, text=True, check=True).stdout
    assert "create type: streamOptimized" in info
    disks = {}
    for name in ("morphed", "unmorphed"):
        disks[name] = work / f"{name}.raw"
        subprocess.run(
            ["qemu-img", "convert", "-f", "vmdk", "-O", "raw", str(vmdk), str(disks[name])], check=True
        )
    return disks


@pytest.fixture(scope="module")
def morph_result(migrated_disks: dict[str, Path]) -> tuple[object, list[str]]:
    events: list[str] = []
    report = morph_image(
        str(migrated_disks["morphed"]),
        "raw",
        target_platform="kvm",
        source_platform="vmware",
        options=MorphOptions(),
        on_event=events.append,
    )
    return report, events


def test_morph_changes_the_real_guest(morph_result: tuple[object, list[str]]) -> None:
    report, events = morph_result
    from osmorphing import MorphReport

    assert isinstance(report, MorphReport)
    info = report.os_info
    assert (info.distribution, info.family, info.architecture) == ("debian", "debian", "x86_64")
    assert info.version.startswith("12.")
    assert (info.firmware, info.bootloader, info.initramfs_tool) == ("bios", "grub2", "initramfs-tools")
    assert info.root_filesystem == "/dev/sda2"
    assert "open-vm-tools" in info.agents
    assert info.network_styles == ["ifupdown"]  # a .link file pins a name; it configures no network
    assert [(i.name, i.mode, i.mac_address) for i in info.interfaces] == [(OLD_NIC, "static", VMWARE_MAC)]
    assert len(info.kernels) == 1

    changed = {(c.action, c.path) for c in report.changes}
    backup = "/var/lib/sterna/backup"
    assert {
        ("command", "env DEBIAN_FRONTEND=noninteractive apt-get -y -q purge open-vm-tools"),
        ("created", f"{backup}/etc/network/interfaces"),
        ("modified", "/etc/network/interfaces"),
        ("created", f"{backup}/etc/systemd/network/10-{OLD_NIC}.link"),
        ("deleted", f"/etc/systemd/network/10-{OLD_NIC}.link"),
        ("created", f"{backup}/etc/default/grub"),
        ("modified", "/etc/default/grub"),
        ("modified", "/etc/initramfs-tools/modules"),
        ("command", "update-initramfs -u -k all"),
        ("command", "update-grub"),
    } == changed
    # The operator sees every change among the task events.
    for change in report.changes:
        assert change.line() in events
    # The fstab already used a UUID, so it was left alone.
    assert not any(path == "/etc/fstab" for _, path in changed)
    assert ROOT_UUID  # (the guest's root filesystem UUID, kept by the conversion)


def test_morphed_guest_boots_and_gets_dhcp(
    migrated_disks: dict[str, Path], morph_result: object, tmp_path: Path
) -> None:
    result = boot_check(
        str(migrated_disks["morphed"]), "raw", timeout=BOOT_TIMEOUT, workdir=tmp_path / "boot"
    )
    log = result.serial_log.read_text(errors="replace")
    assert result.userspace_started, log[-3000:]
    assert result.ipv4 == "10.0.2.15", log[-3000:]
    assert any(line.startswith("STERNA-GUEST-IPV4 eth0 10.0.2.15/") for line in result.evidence)
    # The morphed kernel command line is in effect: serial console and eth* names.
    assert "net.ifnames=0" in log


def test_unmorphed_guest_boots_without_network(migrated_disks: dict[str, Path], tmp_path: Path) -> None:
    result = boot_check(
        str(migrated_disks["unmorphed"]), "raw", timeout=BOOT_TIMEOUT, workdir=tmp_path / "boot"
    )
    log = result.serial_log.read_text(errors="replace")
    assert result.userspace_started, log[-3000:]
    assert result.ipv4 is None
    assert result.reason == "no-network-reported", log[-3000:]
    # The NIC came up under its new predictable name, which the VMware-era config does not know.
    assert any("STERNA-GUEST-NO-IPV4" in line and OLD_NIC not in line for line in result.evidence)
