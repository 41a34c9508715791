"""Judging a serial console for any guest: boot stages and when they were seen, userspace from generic
markers only, and the terminal states that end a check at once (with the line that shows them).

The failure transcripts are the texts initramfs-tools, the kernel, systemd, GRUB and SeaBIOS print;
``debian12-boot.log`` is a real serial console recorded from a QEMU TCG boot (``boot_check``) of the
unmorphed cloud-init Debian 12 test guest, up to its login prompts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.local.boot import qemu_command
from providers.local.console import FOLLOWED_WITHIN, ConsoleWatch, scan_console

DATA = Path(__file__).parent / "data"

KERNEL_ONLY = """\
[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org)
[    8.123456] virtio_blk virtio1: [vda] 6291456 512-byte logical blocks
[   10.400000] EXT4-fs (vda2): mounted filesystem with ordered data mode.
[   10.500000] Run /sbin/init as init process
"""

INITRAMFS_ALERT = """\
[    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org)
[    2.100000] Run /init as init process
Loading, please wait...
Begin: Loading essential drivers ... done.
Begin: Running /scripts/local-block ... done.
Gave up waiting for root file system device.  Common problems:
 - Boot args (cat /proc/cmdline)
   - Check rootdelay= (did the system wait long enough?)
 - Missing modules (cat /proc/modules; ls /dev)
ALERT!  /dev/sda2 does not exist.  Dropping to a shell!


BusyBox v1.35.0 (Debian 1:1.35.0-4+b3) built-in shell (ash)
Enter 'help' for a list of built-in commands.

(initramfs) """


def test_kernel_lines_are_not_a_boot() -> None:
    state = scan_console(KERNEL_ONLY)
    assert not state.userspace_started and state.failure is None
    assert list(state.stages) == ["kernel", "root mounted"]


def test_the_test_guests_own_marker_proves_nothing() -> None:
    state = scan_console(KERNEL_ONLY + "STERNA-GUEST-IPV4 ens3 10.0.2.15/24\nSTERNA-GUEST-NO-IPV4 links: lo\n")
    assert not state.userspace_started


@pytest.mark.parametrize("text", [
    # systemd, with its colours
    "\x1b[0;32m  OK  \x1b[0m] Reached target \x1b[0;1;39mmulti-user.target\x1b[0m - Multi-User System.\r\n",
    # getty's prompt: no newline after it
    "\r\nDebian GNU/Linux 12 migrated ttyS0\r\n\r\nmigrated login: ",
    "INIT: Entering runlevel: 2\n",
    "Cloud-init v. 23.1.2 finished at Tue, 25 Nov 2026 01:00:00 +0000. Datasource DataSourceNone.\n",
    "Computer is booting, SAC started and initialized.\r\nEVENT: The CMD command is now available.\r\n",
])
def test_generic_userspace_markers(text: str) -> None:
    assert scan_console(text).userspace_started


def test_a_real_debian_boot_reaches_userspace_without_failure() -> None:
    state = scan_console((DATA / "debian12-boot.log").read_text(errors="replace"))
    assert state.failure is None
    assert {"kernel", "initramfs", "root mounted", "userspace"} <= set(state.stages)


def test_initramfs_alert_is_terminal_and_quotes_the_device_line() -> None:
    state = scan_console(INITRAMFS_ALERT)
    assert state.failure == ("root device missing", "ALERT!  /dev/sda2 does not exist.  Dropping to a shell!")
    assert not state.userspace_started


def test_gave_up_waiting_alone_is_terminal() -> None:
    watch = ConsoleWatch(clock=lambda: 5.0)
    watch.feed("Gave up waiting for root file system device.  Common problems:\n")
    assert watch.state.failure == ("root device missing",
                                   "Gave up waiting for root file system device.  Common problems:")


def test_a_gave_up_line_waits_for_the_alert_that_names_the_device_in_a_later_read() -> None:
    # A loaded host reads the initramfs's two lines apart: the check must not end on the first.
    now = [40.0]
    watch = ConsoleWatch(clock=lambda: now[0])
    watch.feed("Gave up waiting for root file system device.  Common problems:\n - Boot args\n")
    assert watch.state.failure is not None and not watch.failure_final(now[0])
    now[0] = 46.0
    watch.feed("ALERT!  /dev/sda2 does not exist.  Dropping to a shell!\n")
    assert watch.state.failure == ("root device missing", "ALERT!  /dev/sda2 does not exist.  Dropping to a shell!")
    assert watch.failure_final(now[0]) and watch.state.failure_at == 40.0


def test_a_gave_up_line_alone_ends_the_check_after_its_wait() -> None:
    watch = ConsoleWatch(clock=lambda: 40.0)
    watch.feed("Gave up waiting for root file system device.  Common problems:\n")
    assert not watch.failure_final(41.0) and watch.failure_final(40.0 + max(FOLLOWED_WITHIN.values()))
    assert watch.state.failure == ("root device missing",
                                   "Gave up waiting for root file system device.  Common problems:")


def test_other_terminal_lines_end_the_check_at_once() -> None:
    watch = ConsoleWatch(clock=lambda: 7.0)
    watch.feed("[    2.5] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n")
    assert watch.failure_final(7.0)


@pytest.mark.parametrize(("text", "kind"), [
    ("[    2.5] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n", "kernel panic"),
    ("You are in emergency mode. After logging in, type \"journalctl -xb\" to view system logs.\n",
     "emergency mode"),
    ("error: unknown filesystem.\nEntering rescue mode...\ngrub rescue> ", "GRUB rescue shell"),
    ("Booting from Hard Disk...\nBoot failed: not a bootable disk\n\nNo bootable device.\n", "no bootable device"),
])
def test_terminal_states(text: str, kind: str) -> None:
    state = scan_console(text)
    assert state.failure is not None and state.failure[0] == kind


def test_stage_times_are_when_each_stage_was_read_even_across_split_lines() -> None:
    now = [0.0]
    watch = ConsoleWatch(clock=lambda: now[0])
    now[0] = 12.0
    assert watch.feed("[    0.000000] Linux version 6.1.0-18-amd64 (x)\nReached tar") == ["kernel"]
    now[0] = 66.0
    assert watch.feed("get Multi-User System.\n") == ["userspace"]
    now[0] = 110.0
    watch.feed("[  100.0] reboot: Power down\n")
    assert watch.state.stages["kernel"][0] == 12.0
    assert watch.state.stages["userspace"] == (66.0, "Reached target Multi-User System.")
    assert watch.state.last_stage == "userspace"


def test_qemu_uses_the_targets_devices_never_writes_the_disk_and_dumps_the_nic(tmp_path: Path) -> None:
    argv = qemu_command("/d/disk.qcow2", "qcow2", tmp_path / "serial.log", pcap=tmp_path / "nic.pcap",
                        probe_port=40022)
    assert argv[:3] == ["qemu-system-x86_64", "-accel", "tcg"]
    assert "file=/d/disk.qcow2,format=qcow2,snapshot=on,cache=unsafe,if=virtio" in argv
    assert "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22" in argv
    assert f"filter-dump,id=dump0,netdev=net0,file={tmp_path / 'nic.pcap'}" in argv
    assert any(a.startswith("virtio-net-pci,netdev=net0") for a in argv)
    assert f"file:{tmp_path / 'serial.log'}" in argv


def test_qemu_can_attach_the_disk_as_nvme_like_a_nitro_instance(tmp_path: Path) -> None:
    argv = qemu_command("/d/disk.raw", "raw", tmp_path / "serial.log", disk_bus="nvme")
    assert "file=/d/disk.raw,format=raw,snapshot=on,cache=unsafe,if=none,id=disk0" in argv
    assert "nvme,drive=disk0,serial=sterna-boot" in argv
    assert not any("if=virtio" in a for a in argv)
    with pytest.raises(ValueError, match="unknown disk bus"):
        qemu_command("/d/disk.raw", "raw", tmp_path / "serial.log", disk_bus="scsi")


def test_qemu_can_attach_the_disk_to_virtio_scsi_like_gce(tmp_path: Path) -> None:
    argv = qemu_command("/d/disk.raw", "raw", tmp_path / "serial.log", disk_bus="virtio-scsi")
    assert "virtio-scsi-pci,id=scsi0" in argv
    assert "file=/d/disk.raw,format=raw,snapshot=on,cache=unsafe,if=none,id=disk0" in argv
    assert "scsi-hd,drive=disk0,bus=scsi0.0" in argv
    assert not any("if=virtio" in a for a in argv)
