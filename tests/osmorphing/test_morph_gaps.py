"""The morph's last gaps: grub-pc's install device by a stable name, and the target's guest agent.

Synthetic trees (``DirectoryGuest``): the files changed are real, the commands are recorded. What the
guest's own package manager then does with a recorded command is not proven here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from osmorphing import DirectoryGuest, MorphOptions, MorphReport, morph_guest
from osmorphing.linux.families import BOOT_DISK_RULES, DEBCONF_DB

PTUUID = "517b2611-9f7f-614d-b34e-a76a1819ebd8"
LINK = f"/dev/disk/by-id/sterna-ptuuid-{PTUUID}"
# A debconf database as grub-pc's installation leaves it on a VMware guest (no by-id link for its disk).
CONFIG_DAT = (
    "Name: grub-pc/hidden_timeout\nTemplate: grub-pc/hidden_timeout\nValue: true\nOwners: grub-pc\n\n"
    "Name: grub-pc/install_devices\nTemplate: grub-pc/install_devices\nValue: /dev/sda\nOwners: grub-pc\n"
    "Flags: seen\nVariables:\n CHOICES = /dev/sda (21474 MB; VMware_Virtual_S)\n RAW_CHOICES = /dev/sda\n\n"
    "Name: grub-pc/timeout\nTemplate: grub-pc/timeout\nValue: 5\nOwners: grub-pc\n\n"
)
DEBIAN_SOURCES = ("deb http://deb.debian.org/debian bookworm main\n"
                  "deb http://security.debian.org/debian-security bookworm-security main\n")


def _morph(guest: DirectoryGuest, target: str, source: str | None = "vmware") -> tuple[MorphReport, list[str]]:
    events: list[str] = []
    report = morph_guest(guest, target_platform=target, source_platform=source, options=MorphOptions(),
                         on_event=events.append)
    return report, events


def _with_grub_pc(root: Path) -> None:
    status = root / "var/lib/dpkg/status"
    status.write_text(status.read_text() + "Package: grub-pc\nStatus: install ok installed\nVersion: 2.06-13\n\n")
    (root / DEBCONF_DB.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    (root / DEBCONF_DB.lstrip("/")).write_text(CONFIG_DAT)


def test_grub_pc_install_device_names_the_boot_disk_by_its_partition_table(
    make_guest: Callable[[str], DirectoryGuest],
) -> None:
    guest = make_guest("debian")
    _with_grub_pc(guest.root)
    guest.boot_ptuuid = PTUUID
    report, events = _morph(guest, "kvm")

    # debconf names the udev link, the other questions untouched; the original is kept
    db = guest.read_text(DEBCONF_DB)
    assert f"Name: grub-pc/install_devices\nTemplate: grub-pc/install_devices\nValue: {LINK}\n" in db
    assert db == CONFIG_DAT.replace("Value: /dev/sda\n", f"Value: {LINK}\n")
    assert guest.read_text(f"/var/lib/sterna/backup{DEBCONF_DB}") == CONFIG_DAT
    # the link exists on the target because a udev rule names the disk by its partition-table UUID
    rule = [line for line in guest.read_text(BOOT_DISK_RULES).splitlines() if not line.startswith("#")]
    assert rule == [f'ACTION!="remove", SUBSYSTEM=="block", ENV{{DEVTYPE}}=="disk", '
                    f'ENV{{ID_PART_TABLE_UUID}}=="{PTUUID}", SYMLINK+="disk/by-id/sterna-ptuuid-{PTUUID}"']
    # each change is a task event
    changed = {(c.action, c.path): c.line() for c in report.changes}
    assert changed.keys() >= {("created", BOOT_DISK_RULES), ("modified", DEBCONF_DB),
                              ("created", f"/var/lib/sterna/backup{DEBCONF_DB}")}
    for line in changed.values():
        assert line in events
    assert any(f"/dev/sda -> {LINK}" in e for e in events), events

    # a second morph finds it done
    again, _ = _morph(guest, "kvm")
    assert not {c.path for c in again.changes} & {DEBCONF_DB, BOOT_DISK_RULES}


def test_grub_pc_install_device_left_with_the_reason_when_the_disk_has_no_table_uuid(
    make_guest: Callable[[str], DirectoryGuest],
) -> None:
    guest = make_guest("debian")
    _with_grub_pc(guest.root)
    report, events = _morph(guest, "kvm")  # boot_ptuuid unknown, as for a root on LVM
    assert guest.read_text(DEBCONF_DB) == CONFIG_DAT
    assert not guest.exists(BOOT_DISK_RULES)
    assert any(w.startswith("debconf grub-pc/install_devices left at /dev/sda: the boot disk has no "
                            "partition-table UUID") for w in report.warnings), report.warnings
    assert any(e.startswith("warning: debconf grub-pc/install_devices left at") for e in events)


def test_no_grub_pc_no_debconf_change(make_guest: Callable[[str], DirectoryGuest]) -> None:
    guest = make_guest("debian")  # grub-pc-bin only, like the project's test guest
    guest.write_text(DEBCONF_DB, CONFIG_DAT)  # a stale answer from a grub-pc once installed
    guest.boot_ptuuid = PTUUID
    report, _ = _morph(guest, "kvm")
    assert not any(c.path in (DEBCONF_DB, BOOT_DISK_RULES) for c in report.changes)


def test_agent_from_the_apt_cache_is_installed_without_the_network(
    make_guest: Callable[[str], DirectoryGuest],
) -> None:
    guest = make_guest("debian")
    deb = "/var/cache/apt/archives/qemu-guest-agent_1%3a7.2+dfsg-7+deb12u7_amd64.deb"
    guest.write_bytes(deb, b"!<arch>\n")
    guest.write_bytes("/var/cache/apt/archives/qemu-guest-agent-dbgsym_1%3a7.2_amd64.deb", b"!<arch>\n")
    report, events = _morph(guest, "kvm")
    command = f"env DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-download install {deb}"
    assert [" ".join(a) for a in guest.commands if "install" in a] == [command]
    change = next(c for c in report.changes if c.path == command)
    assert change.action == "command"
    assert change.detail.startswith(f"install qemu-guest-agent for kvm from the guest's package cache ({deb})")
    assert change.line() in events
    assert not any("qemu-guest-agent" in w for w in report.warnings)


def test_agent_without_a_reachable_repository_is_an_event_saying_why(
    make_guest: Callable[[str], DirectoryGuest],
) -> None:
    guest = make_guest("debian")
    guest.write_text("/etc/apt/sources.list", DEBIAN_SOURCES)
    report, events = _morph(guest, "kvm")
    assert not any("install" in a for a in guest.commands)
    expected = ("warning: qemu-guest-agent not installed for kvm: no qemu-guest-agent package in the guest's "
                "package cache and no local repository, and its repositories (http://deb.debian.org/debian "
                "bookworm; http://security.debian.org/debian-security bookworm-security) need the network, "
                "which OS morphing does not give the guest; install qemu-guest-agent on the running instance")
    assert expected in events
    assert expected.removeprefix("warning: ") in report.warnings


def test_agent_from_a_local_apt_repository(make_guest: Callable[[str], DirectoryGuest]) -> None:
    guest = make_guest("ubuntu")
    guest.write_text("/etc/apt/sources.list.d/ubuntu.sources",
                     "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu\nSuites: jammy\nComponents: main\n\n"
                     "Types: deb\nURIs: file:/srv/mirror\nSuites: jammy\nComponents: main\n")
    report, _ = _morph(guest, "azure")
    assert ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q", "install", "walinuxagent"] in \
        guest.commands
    assert any(c.detail.startswith("install waagent for azure from its local repository (file:/srv/mirror jammy)")
               for c in report.changes)


@pytest.mark.parametrize(("name", "tool"), [("rhel", "yum"), ("rocky", "dnf")])
def test_agent_from_the_rpm_cache_or_a_local_repository(
    make_guest: Callable[[str], DirectoryGuest], name: str, tool: str,
) -> None:
    guest = make_guest(name)
    if tool == "dnf":
        guest.write_bytes("/usr/bin/dnf", b"")
        rpm = "/var/cache/dnf/appstream-3c2a9d0ea8c5/packages/WALinuxAgent-2.7.0.6-9.el9.noarch.rpm"
        guest.write_bytes(rpm, b"\xed\xab\xee\xdb")
        _morph(guest, "azure")
        assert [tool, "-y", "-C", "install", rpm] in guest.commands
        return
    guest.write_text("/etc/yum.repos.d/local.repo",
                     "[base]\nname=base\nmirrorlist=http://mirrorlist.example/?repo=os\n\n"
                     "[media]\nname=DVD\nbaseurl=file:///mnt/dvd\nenabled=1\n\n"
                     "[off]\nbaseurl=file:///srv/off\nenabled=0\n")
    _morph(guest, "kvm")
    assert [tool, "-y", "--disablerepo=*", "--enablerepo=media", "install", "qemu-guest-agent"] in guest.commands


def test_agent_from_the_zypper_cache(make_guest: Callable[[str], DirectoryGuest]) -> None:
    guest = make_guest("sles")
    rpm = ("/var/cache/zypp/packages/SLE-Module-Public-Cloud/x86_64/"
           "google-guest-agent-20231004.02-150000.1.37.1.x86_64.rpm")
    guest.write_bytes(rpm, b"\xed\xab\xee\xdb")
    report, _ = _morph(guest, "gcp", source="hyperv")
    assert ["zypper", "--non-interactive", "--no-refresh", "install", rpm] in guest.commands
    assert not any("google-guest-agent not installed" in w for w in report.warnings)


def test_an_agent_already_there_is_left_alone(make_guest: Callable[[str], DirectoryGuest]) -> None:
    guest = make_guest("fedora")  # qemu-guest-agent present
    report, _ = _morph(guest, "kvm")
    assert not any("install" in a for a in guest.commands)
    assert not any("qemu-guest-agent" in w for w in report.warnings)



def test_mbr_signature_is_spelt_as_blkid_spells_ptuuid(tmp_path: Path) -> None:
    """The udev rule matches ID_PART_TABLE_UUID, which is blkid's PTUUID: for an MBR, its signature.
    (The GPT disk GUID comes from libguestfs; tests/client/test_cli.py sees it end to end.)"""
    import subprocess

    from osmorphing.libguestfs_guest import MBR_SIGNATURE_OFFSET, mbr_ptuuid

    disk = tmp_path / "dos.raw"
    with open(disk, "wb") as f:
        f.truncate(8 * 1024**2)
    subprocess.run(["sfdisk", "-q", str(disk)], input="label: dos\nstart=2048, type=83\n", text=True, check=True,
                   capture_output=True)
    blkid = subprocess.run(["blkid", "-p", "-s", "PTUUID", "-o", "value", str(disk)], check=True,
                           capture_output=True, text=True).stdout.strip()
    with open(disk, "rb") as f:
        f.seek(MBR_SIGNATURE_OFFSET)
        assert mbr_ptuuid(f.read(4)) == blkid
    assert len(blkid) == 8
    assert mbr_ptuuid(b"\0\0\0\0") is None
