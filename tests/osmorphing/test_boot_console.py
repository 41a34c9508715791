"""Judging a serial console: userspace or not, and the guest's IPv4 address."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.local.boot import qemu_command, scan_console

KERNEL_ONLY = """\
[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org)
[    8.123456] virtio_blk virtio1: [vda] 6291456 512-byte logical blocks
[   10.400000] EXT4-fs (vda2): mounted filesystem with ordered data mode.
[   10.500000] Run /sbin/init as init process
"""


def test_kernel_lines_are_not_a_boot() -> None:
    scan = scan_console(KERNEL_ONLY)
    assert not scan.userspace_started
    assert scan.ipv4 is None


def test_login_prompt_and_ip_report() -> None:
    text = KERNEL_ONLY + (
        "\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mmulti-user.target\x1b[0m"
        " - Multi-User System.\r\n"
        "STERNA-GUEST-IPV4 eth0 10.0.2.15/24\r\n"
        "\r\nDebian GNU/Linux 12 migrated ttyS0\r\n\r\nmigrated login: "
    )
    scan = scan_console(text)
    assert scan.userspace_started
    assert scan.ipv4 == "10.0.2.15"
    assert "STERNA-GUEST-IPV4 eth0 10.0.2.15/24" in scan.evidence
    assert "migrated login:" in scan.evidence


def test_cloud_init_table_gives_the_address() -> None:
    text = (
        "ci-info: | eth0   | True |  192.168.122.40 | 255.255.255.0 | global | 52:54:00:aa:bb:cc |\n"
        "Cloud-init v. 23.1.2 finished at Tue, 25 Nov 2026 01:00:00 +0000. Datasource DataSourceNoCloud.\n"
    )
    scan = scan_console(text)
    assert (scan.userspace_started, scan.ipv4) == (True, "192.168.122.40")


def test_guest_reporting_no_address() -> None:
    scan = scan_console("vmware-guest login: STERNA-GUEST-NO-IPV4 links: ens2 lo\n")
    assert scan.userspace_started and scan.network_failed and scan.ipv4 is None


def test_qemu_uses_the_targets_devices_and_never_writes_the_disk(tmp_path: Path) -> None:
    argv = qemu_command("/d/disk.qcow2", "qcow2", tmp_path / "serial.log")
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
    assert "file=/d/disk.qcow2,format=qcow2,snapshot=on,cache=unsafe,if=virtio" in argv
    assert "user,id=net0" in argv
    assert any(a.startswith("virtio-net-pci,netdev=net0") for a in argv)
    assert f"file:{tmp_path / 'serial.log'}" in argv


def test_qemu_can_attach_the_disk_as_nvme_like_a_nitro_instance(tmp_path: Path) -> None:
    argv = qemu_command("/d/disk.raw", "raw", tmp_path / "serial.log", disk_bus="nvme")
    assert "file=/d/disk.raw,format=raw,snapshot=on,cache=unsafe,if=none,id=disk0" in argv
    assert "nvme,drive=disk0,serial=sterna-boot" in argv
    assert not any("if=virtio" in a for a in argv)
    with pytest.raises(ValueError, match="unknown disk bus"):
        qemu_command("/d/disk.raw", "raw", tmp_path / "serial.log", disk_bus="scsi")
