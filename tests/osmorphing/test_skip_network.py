"""``skip_network`` (``destination_environment.skip_os_morphing_network``): the morph leaves the guest's
network exactly as it found it (configuration, MAC pins, interface naming), says so in its events, and
does every other step."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from osmorphing import DirectoryGuest, MorphOptions, morph_guest
from osmorphing.netconf import read_network
from tests.guests.trees import KERNELS

SKIPPED = "network step skipped at the user's request (destination_environment.skip_os_morphing_network)"


@pytest.mark.parametrize("name", ["debian", "ubuntu", "rhel", "sles"])
def test_network_left_as_found_and_the_rest_morphed(make_guest: Callable[[str], DirectoryGuest], name: str) -> None:
    guest = make_guest(name)
    before = read_network(guest)
    # Each tree pins its NIC to a VMware MAC: in a udev rule, or in the configuration itself.
    assert before.pin_files or any(i.mac_address for i in before.interfaces)
    files = {p: guest.read_text(p) for p in before.config_files + before.pin_files}
    events: list[str] = []
    report = morph_guest(guest, target_platform="kvm", source_platform="vmware",
                         options=MorphOptions(skip_network=True), on_event=events.append)

    after = read_network(guest)
    assert (after.interfaces, after.config_files, after.pin_files) == (
        before.interfaces, before.config_files, before.pin_files)
    assert {p: guest.read_text(p) for p in files} == files
    assert not report.changed_paths() & set(files)
    [said] = [e for e in events if e.startswith(SKIPPED)]
    assert before.interfaces[0].name in said and all(p in said for p in before.pin_files), said

    # Every other step ran: fstab by UUID, the kernel command line (without naming arguments), initramfs.
    assert "/etc/fstab" in report.changed_paths() or name == "ubuntu"  # ubuntu's fstab is already by UUID
    grub = guest.read_text("/etc/default/grub")
    assert "console=ttyS0,115200n8" in grub
    assert "net.ifnames" not in grub and "biosdevname" not in grub
    rebuilt = " ".join(" ".join(argv) for argv in guest.commands)
    assert "update-initramfs" in rebuilt or f"--kver {KERNELS[name]}" in rebuilt


def test_the_guests_own_naming_arguments_stay(make_guest: Callable[[str], DirectoryGuest]) -> None:
    guest = make_guest("rhel")
    grub = guest.read_text("/etc/default/grub").replace("rhgb quiet", "rhgb quiet biosdevname=1")
    guest.write_text("/etc/default/grub", grub)
    morph_guest(guest, target_platform="kvm", source_platform="vmware", options=MorphOptions(skip_network=True))
    assert "biosdevname=1" in guest.read_text("/etc/default/grub")
    [grubby] = [argv for argv in guest.commands if argv[0] == "grubby"]
    assert "--remove-args=console" in grubby
    assert "--args=console=tty0 console=ttyS0,115200n8" in grubby


def test_keep_static_ip_has_no_effect_and_says_so(make_guest: Callable[[str], DirectoryGuest]) -> None:
    guest = make_guest("ubuntu")  # cloud-init: keep_static_ip alone would disable its network config
    report = morph_guest(guest, target_platform="kvm", source_platform="vmware",
                         options=MorphOptions(skip_network=True, keep_static_ip=True))
    assert any("keep_static_ip has no effect" in w for w in report.warnings), report.warnings
    assert "network:" not in guest.read_text("/etc/cloud/cloud.cfg.d/95-sterna.cfg")
