"""Morphing each family for each target platform: the exact files changed and commands run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from osmorphing import DirectoryGuest, MorphOptions, MorphReport, morph_guest
from osmorphing.platforms import PLATFORMS
from tests.guests.trees import KERNELS, ROOT_UUID

B = "/var/lib/sterna/backup"
FSTAB = {("created", f"{B}/etc/fstab"), ("modified", "/etc/fstab")}
GRUB = {("created", f"{B}/etc/default/grub"), ("modified", "/etc/default/grub")}
CLOUD_INIT = {
    ("created", "/etc/cloud/cloud.cfg.d/95-sterna.cfg"),
    ("deleted", "/etc/cloud/cloud-init.disabled"),
    (
        "command",
        "systemctl enable cloud-init-local.service cloud-init.service cloud-config.service "
        "cloud-final.service",
    ),
}
UDEV_PIN = {
    ("created", f"{B}/etc/udev/rules.d/70-persistent-net.rules"),
    ("deleted", "/etc/udev/rules.d/70-persistent-net.rules"),
}
IFCFG = {
    ("created", f"{B}/etc/sysconfig/network-scripts/ifcfg-ens192"),
    ("deleted", "/etc/sysconfig/network-scripts/ifcfg-ens192"),
    ("created", "/etc/sysconfig/network-scripts/ifcfg-eth0"),
}
NM = {
    ("created", f"{B}/etc/NetworkManager/system-connections/ens192.nmconnection"),
    ("deleted", "/etc/NetworkManager/system-connections/ens192.nmconnection"),
    ("created", "/etc/NetworkManager/system-connections/sterna-eth0.nmconnection"),
}
WICKED = {
    ("created", f"{B}/etc/sysconfig/network/ifcfg-eth0"),
    ("modified", "/etc/sysconfig/network/ifcfg-eth0"),
    ("created", f"{B}/etc/sysconfig/network/routes"),
    ("deleted", "/etc/sysconfig/network/routes"),
}
GRUBBY = (
    "command",
    "grubby --update-kernel=ALL --remove-args=console net.ifnames biosdevname "
    "--args=console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0",
)
MKCONFIG2 = ("command", "grub2-mkconfig -o /boot/grub2/grub.cfg")


def dracut(kernel: str) -> set[tuple[str, str]]:
    return {("created", "/etc/dracut.conf.d/90-sterna.conf"), ("command", f"dracut -f --kver {kernel}")}


# Source platform of each synthetic guest, and the command that removes its tools.
SOURCES = {
    "debian": ("vmware", "env DEBIAN_FRONTEND=noninteractive apt-get -y -q purge open-vm-tools"),
    "ubuntu": ("vmware", "env DEBIAN_FRONTEND=noninteractive apt-get -y -q purge open-vm-tools"),
    "rhel": ("vmware", "rpm -e open-vm-tools"),
    "centos": ("vmware", "rpm -e open-vm-tools"),
    "rocky": ("vmware", "rpm -e open-vm-tools"),
    "fedora": ("vmware", "rpm -e open-vm-tools"),
    "sles": ("hyperv", "rpm -e hyper-v"),
    "opensuse": ("hyperv", "rpm -e hyper-v"),
}

EXPECTED: dict[str, set[tuple[str, str]]] = {
    "debian": FSTAB
    | GRUB
    | UDEV_PIN
    | {
        ("created", f"{B}/etc/network/interfaces"),
        ("modified", "/etc/network/interfaces"),
        ("modified", "/etc/initramfs-tools/modules"),
        ("command", "update-initramfs -u -k all"),
        ("command", "update-grub"),
    },
    "ubuntu": GRUB
    | CLOUD_INIT
    | {
        ("created", f"{B}/etc/netplan/00-installer-config.yaml"),
        ("deleted", "/etc/netplan/00-installer-config.yaml"),
        ("created", "/etc/netplan/50-sterna.yaml"),
        ("created", "/etc/initramfs-tools/modules"),
        ("command", "update-initramfs -u -k all"),
        ("command", "update-grub"),
    },
    "rhel": FSTAB
    | GRUB
    | IFCFG
    | dracut(KERNELS["rhel"])
    | {("created", "/.autorelabel"), GRUBBY, MKCONFIG2},
    "centos": FSTAB
    | GRUB
    | IFCFG
    | dracut(KERNELS["centos"])
    | {("created", "/.autorelabel"), GRUBBY, MKCONFIG2},
    "rocky": FSTAB
    | GRUB
    | NM
    | CLOUD_INIT
    | dracut(KERNELS["rocky"])
    | {("created", "/.autorelabel"), GRUBBY, MKCONFIG2},
    "fedora": FSTAB
    | GRUB
    | NM
    | dracut(KERNELS["fedora"])
    | {("created", "/.autorelabel"), GRUBBY, MKCONFIG2},
    "sles": FSTAB | GRUB | WICKED | UDEV_PIN | dracut(KERNELS["sles"]) | {MKCONFIG2},
    "opensuse": FSTAB
    | GRUB
    | WICKED
    | UDEV_PIN
    | CLOUD_INIT
    | dracut(KERNELS["opensuse-leap"])
    | {MKCONFIG2},
}

DATASOURCES = {
    "kvm": "[ ConfigDrive, OpenStack, NoCloud, None ]",
    "aws": "[ Ec2, None ]",
    "azure": "[ Azure, None ]",
    "gcp": "[ GCE, None ]",
}


def morph(guest: DirectoryGuest, name: str, target: str, **options: object) -> MorphReport:
    source, _ = SOURCES[name]
    events: list[str] = []
    report = morph_guest(
        guest,
        target_platform=target,
        source_platform=source,
        options=MorphOptions.model_validate(options),
        on_event=events.append,
    )
    # Every change is announced as an event, one line each, so the task's events are a full audit trail.
    for change in report.changes:
        assert change.line() in events
    return report


@pytest.mark.parametrize("target", sorted(PLATFORMS))
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_changes_per_family_and_platform(
    make_guest: Callable[[str], DirectoryGuest], name: str, target: str
) -> None:
    guest = make_guest(name)
    report = morph(guest, name, target)
    _, removal = SOURCES[name]
    expected = set(EXPECTED[name])
    # Hyper-V daemons came from the Hyper-V source but are exactly what Azure (Hyper-V based) wants.
    keeps_source_tools = SOURCES[name][0] == "hyperv" and target == "azure"
    if not keeps_source_tools:
        expected.add(("command", removal))
    assert {(c.action, c.path) for c in report.changes} == expected

    # The commands were recorded in the guest, in the order they would run.
    recorded = [" ".join(argv) for argv in guest.commands]
    assert recorded == [c.path for c in report.changes if c.action == "command"]
    assert (recorded[0] == removal) is not keeps_source_tools

    # The target's drivers went into the initramfs configuration.
    drivers = PLATFORMS[target].drivers
    if report.os_info.initramfs_tool == "initramfs-tools":
        modules = guest.read_text("/etc/initramfs-tools/modules").splitlines()
        assert modules[-len(drivers) :] == list(drivers)
    else:
        conf = guest.read_text("/etc/dracut.conf.d/90-sterna.conf")
        expected_drivers = [d for d in drivers if not (name == "centos" and d == "gve")]
        assert f'add_drivers+=" {" ".join(expected_drivers)} "' in conf

    # cloud-init, where installed, uses the target's datasource.
    if "cloud-init" in report.os_info.agents:
        cfg = guest.read_text("/etc/cloud/cloud.cfg.d/95-sterna.cfg")
        assert f"datasource_list: {DATASOURCES[target]}" in cfg
        assert not guest.exists("/etc/cloud/cloud-init.disabled")


@pytest.mark.parametrize("target", ["kvm", "azure"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_kernel_command_line_serial_console_and_uuids(
    make_guest: Callable[[str], DirectoryGuest], name: str, target: str
) -> None:
    guest = make_guest(name)
    morph(guest, name, target)
    grub = guest.read_text("/etc/default/grub")
    cmdline = next(line for line in grub.splitlines() if line.startswith("GRUB_CMDLINE_LINUX="))
    for arg in ("console=tty0", "console=ttyS0,115200n8", "net.ifnames=0", "biosdevname=0"):
        assert arg in cmdline
    assert "/dev/sda" not in cmdline
    assert 'GRUB_TERMINAL="console serial"' in grub
    fstab = guest.read_text("/etc/fstab")
    assert "/dev/sd" not in fstab
    assert f"UUID={ROOT_UUID} /" in fstab or name == "ubuntu"


@pytest.mark.parametrize("target", ["aws", "azure"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_network_becomes_dhcp_on_eth0_without_mac_pins(
    make_guest: Callable[[str], DirectoryGuest], name: str, target: str
) -> None:
    guest = make_guest(name)
    morph(guest, name, target)
    from osmorphing.netconf import read_network

    state = read_network(guest)
    assert [(i.name, i.mode, i.mac_address) for i in state.interfaces] == [("eth0", "dhcp", None)]
    assert state.pin_files == []


@pytest.mark.parametrize("target", ["gcp", "kvm"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_gcp_network_config_sets_mtu_1460(make_guest: Callable[[str], DirectoryGuest], name: str,
                                          target: str) -> None:
    """GCE's VPC MTU is 1460: every interface config written for gcp says so, in its own syntax;
    for kvm none does."""
    mtu_lines = ("mtu 1460", "mtu: 1460", "mtu=1460", "MTU=1460", "MTU='1460'", "MTUBytes=1460")
    guest = make_guest(name)
    report = morph(guest, name, target)
    written = [c.path for c in report.changes if c.action in ("created", "modified")
               and c.path.startswith(("/etc/network/", "/etc/netplan/", "/etc/NetworkManager/",
                                      "/etc/sysconfig/network", "/etc/systemd/network/"))]
    assert written, [c.line() for c in report.changes]
    for path in written:
        text = guest.read_text(path)
        assert any(line in text for line in mtu_lines) is (target == "gcp"), (target, path, text)


def test_unmorphable_guests_raise_with_the_cause(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from osmorphing import InspectionError, UnsupportedOS

    with pytest.raises(InspectionError, match="no operating system"):
        morph_guest(
            DirectoryGuest(tmp_path), target_platform="kvm", source_platform=None, options=MorphOptions()
        )
    arch = tmp_path / "arch"
    (arch / "etc").mkdir(parents=True)
    (arch / "etc/os-release").write_text('NAME="Arch Linux"\nID=arch\n')
    with pytest.raises(UnsupportedOS, match=r"'Arch Linux' .*not supported"):
        morph_guest(DirectoryGuest(arch), target_platform="kvm", source_platform=None, options=MorphOptions())
    old = tmp_path / "old"
    (old / "etc").mkdir(parents=True)
    (old / "etc/os-release").write_text('ID=centos\nVERSION_ID="6"\nPRETTY_NAME="CentOS 6"\n')
    with pytest.raises(UnsupportedOS, match="older than the oldest supported centos"):
        morph_guest(DirectoryGuest(old), target_platform="kvm", source_platform=None, options=MorphOptions())
    # An os-release with no kernel and no program (the demo's sample disk, a data disk): nothing boots
    # from it, so it is no OS to adapt (copied unchanged), not an unsupported one (a failed migration).
    bare = tmp_path / "bare"
    (bare / "etc").mkdir(parents=True)
    (bare / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12"\n')
    with pytest.raises(InspectionError, match="no kernel and no program"):
        morph_guest(DirectoryGuest(bare), target_platform="kvm", source_platform=None, options=MorphOptions())


def test_unknown_target_platform_is_refused(make_guest: Callable[[str], DirectoryGuest]) -> None:
    from osmorphing import UnsupportedOS

    with pytest.raises(UnsupportedOS, match="unknown target platform 'vmware'"):
        morph_guest(
            make_guest("debian"), target_platform="vmware", source_platform=None, options=MorphOptions()
        )


def test_source_tools_stay_when_asked(make_guest: Callable[[str], DirectoryGuest]) -> None:
    guest = make_guest("rhel")
    report = morph(guest, "rhel", "kvm", remove_source_tools=False)
    assert not any(c.path.startswith("rpm -e") for c in report.changes)


def test_morphing_twice_changes_nothing_more(make_guest: Callable[[str], DirectoryGuest]) -> None:
    guest = make_guest("rocky")
    morph(guest, "rocky", "azure")
    again = morph(guest, "rocky", "azure")
    assert {c.action for c in again.changes} <= {"command"}
