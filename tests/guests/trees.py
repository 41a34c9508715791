"""Synthetic guest trees with each distribution's real configuration file layout.

They are not bootable: binaries are stand-ins (an ELF header where the architecture is read from, empty
files where only presence matters), but every configuration file is where, and as, the distribution
writes it, so detection and morphing read and change them as on a real system. Each builder returns
the ``devices`` map (guest device name → filesystem UUID) that ``DirectoryGuest`` uses for fstab rewriting.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

KERNELS = {
    "debian": "6.1.0-18-amd64",
    "ubuntu": "5.15.0-91-generic",
    "rhel": "4.18.0-513.5.1.el8_9.x86_64",
    "centos": "3.10.0-1160.el7.x86_64",
    "rocky": "5.14.0-362.8.1.el9_3.x86_64",
    "fedora": "6.5.6-300.fc39.x86_64",
    "sles": "5.14.21-150500.53-default",
    "opensuse-leap": "5.14.21-150500.55.39-default",
}
ROOT_UUID = "11111111-2222-3333-4444-555555555555"
BOOT_UUID = "66666666-7777-8888-9999-000000000000"
SWAP_UUID = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
DEVICES = {"/dev/sda1": BOOT_UUID, "/dev/sda2": ROOT_UUID, "/dev/sda3": SWAP_UUID}
VMWARE_MAC = "00:50:56:aa:bb:01"
#: modules each synthetic kernel ships (modules.dep); gve is absent on the old CentOS 7 kernel
MODULES = [
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "virtio_net",
    "nvme",
    "ena",
    "xen-blkfront",
    "xen-netfront",
    "hv_vmbus",
    "hv_storvsc",
    "hv_netvsc",
    "hv_utils",
    "gve",
    "vmw_pvscsi",
    "vmxnet3",
]


def _w(root: Path, path: str, text: str = "", mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def _elf(root: Path, path: str, machine: int = 0x3E) -> None:
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + struct.pack("<HH", 2, machine) + b"\0" * 44
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(header)


def _os_release(root: Path, fields: dict[str, str]) -> None:
    _w(root, "/usr/lib/os-release", "".join(f'{k}="{v}"\n' for k, v in fields.items()))
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")


def _kernel(root: Path, kver: str, initrd: str, modules: list[str] = MODULES) -> None:
    _w(root, f"/boot/vmlinuz-{kver}")
    _w(root, f"/boot/{initrd}")
    dep = "".join(f"kernel/drivers/x/{m}.ko.xz:\n" for m in modules)
    _w(root, f"/lib/modules/{kver}/modules.dep", dep)
    _w(root, f"/lib/modules/{kver}/modules.builtin", "kernel/drivers/base/firmware_class.ko\n")


def _fstab(root: Path, boot: bool = True, swap: bool = True) -> None:
    lines = ["# /etc/fstab: static file system information.\n", "/dev/sda2 / ext4 defaults 1 1\n"]
    if boot:
        lines.append("/dev/sda1 /boot ext4 defaults 1 2\n")
    if swap:
        lines.append("/dev/sda3 none swap sw 0 0\n")
    _w(root, "/etc/fstab", "".join(lines))


def _grub_default(root: Path, cmdline: str = "rhgb quiet") -> None:
    _w(
        root,
        "/etc/default/grub",
        (
            "GRUB_TIMEOUT=5\nGRUB_DEFAULT=saved\nGRUB_DISABLE_SUBMENU=true\n"
            f'GRUB_CMDLINE_LINUX="crashkernel=auto root=/dev/sda2 {cmdline}"\nGRUB_DISABLE_RECOVERY="true"\n'
        ),
    )


def _vmware_tools(root: Path, unit_dir: str = "/usr/lib/systemd/system") -> None:
    _elf(root, "/usr/bin/vmtoolsd")
    _w(root, f"{unit_dir}/vmtoolsd.service", "[Service]\nExecStart=/usr/bin/vmtoolsd\n")
    _w(root, "/etc/vmware-tools/tools.conf", "")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "vmtoolsd.service").symlink_to(f"{unit_dir}/vmtoolsd.service")


def _cloud_init(root: Path) -> None:
    _w(root, "/usr/bin/cloud-init", "#!/usr/bin/python3\n", 0o755)
    _w(root, "/etc/cloud/cloud.cfg", "users:\n - default\n")
    _w(root, "/etc/cloud/cloud.cfg.d/90_dpkg.cfg", "datasource_list: [ VMware, OVF, None ]\n")
    _w(root, "/etc/cloud/cloud-init.disabled", "")


def debian(root: Path) -> dict[str, str]:
    """Debian 12 on VMware: ifupdown static on ens192, udev MAC pin, initramfs-tools, open-vm-tools."""
    _os_release(
        root,
        {
            "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
            "NAME": "Debian GNU/Linux",
            "VERSION_ID": "12",
            "VERSION": "12 (bookworm)",
            "ID": "debian",
        },
    )
    _w(root, "/etc/debian_version", "12.4\n")
    _elf(root, "/usr/bin/bash")
    (root / "bin").symlink_to("usr/bin")
    _kernel(root, KERNELS["debian"], f"initrd.img-{KERNELS['debian']}")
    _w(root, "/usr/sbin/update-initramfs", "#!/bin/sh\n", 0o755)
    _w(
        root,
        "/etc/initramfs-tools/modules",
        "# List of modules that you want to include in your initramfs.\n",
    )
    _w(
        root,
        "/var/lib/dpkg/status",
        "Package: open-vm-tools\nStatus: install ok installed\nVersion: 2:12.2.0\n\n",
    )
    (root / "boot/grub/i386-pc").mkdir(parents=True)
    _w(root, "/boot/grub/grub.cfg", "linux /boot/vmlinuz root=/dev/sda2 ro quiet\n")
    _w(
        root,
        "/etc/default/grub",
        'GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n',
    )
    _fstab(root)
    _w(
        root,
        "/etc/network/interfaces",
        (
            "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
            "allow-hotplug ens192\niface ens192 inet static\n"
            "    address 10.20.30.40\n    netmask 255.255.255.0\n"
            "    gateway 10.20.30.1\n    dns-nameservers 10.20.30.2\n"
        ),
    )
    _w(
        root,
        "/etc/udev/rules.d/70-persistent-net.rules",
        f'SUBSYSTEM=="net", ACTION=="add", ATTR{{address}}=="{VMWARE_MAC}", NAME="ens192"\n',
    )
    _vmware_tools(root, "/lib/systemd/system")
    _w(root, "/lib/systemd/system/open-vm-tools.service", "[Service]\n")
    return dict(DEVICES)


def ubuntu(root: Path) -> dict[str, str]:
    """Ubuntu 22.04: netplan pinned by MAC with set-name, cloud-init disabled, open-vm-tools."""
    _os_release(
        root,
        {
            "PRETTY_NAME": "Ubuntu 22.04.3 LTS",
            "NAME": "Ubuntu",
            "VERSION_ID": "22.04",
            "ID": "ubuntu",
            "ID_LIKE": "debian",
            "VERSION_CODENAME": "jammy",
        },
    )
    _w(root, "/etc/debian_version", "bookworm/sid\n")
    _elf(root, "/usr/bin/bash")
    _kernel(root, KERNELS["ubuntu"], f"initrd.img-{KERNELS['ubuntu']}")
    _w(root, "/usr/sbin/update-initramfs", "#!/bin/sh\n", 0o755)
    _w(root, "/var/lib/dpkg/status", "Package: open-vm-tools\nStatus: install ok installed\n\n")
    (root / "boot/grub/i386-pc").mkdir(parents=True)
    _w(root, "/boot/grub/grub.cfg", "")
    _w(
        root,
        "/etc/default/grub",
        'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\nGRUB_CMDLINE_LINUX=""\n',
    )
    _w(root, "/etc/fstab", f"UUID={ROOT_UUID} / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n")
    _w(
        root,
        "/etc/netplan/00-installer-config.yaml",
        (
            "network:\n  version: 2\n  ethernets:\n    ens160:\n      match:\n"
            f"        macaddress: '{VMWARE_MAC}'\n      set-name: ens160\n"
            "      addresses: [192.168.50.10/24]\n      routes:\n"
            "        - to: default\n          via: 192.168.50.1\n"
            "      nameservers:\n        addresses: [192.168.50.2]\n"
        ),
        0o600,
    )
    _w(root, "/etc/network/interfaces", "# ifupdown has been replaced by netplan(5) on this system.\n")
    _cloud_init(root)
    _vmware_tools(root, "/lib/systemd/system")
    return dict(DEVICES)


def _rhel_like(root: Path, release: dict[str, str], kernel_key: str, modules: list[str] = MODULES) -> None:
    _os_release(root, release)
    _w(root, "/etc/redhat-release", release["PRETTY_NAME"] + "\n")
    _elf(root, "/usr/bin/bash")
    kver = KERNELS[kernel_key]
    _kernel(root, kver, f"initramfs-{kver}.img", modules)
    _w(root, "/usr/bin/dracut", "#!/bin/bash\n", 0o755)
    _w(root, "/usr/sbin/grubby", "", 0o755)
    (root / "var/lib/rpm").mkdir(parents=True)
    (root / "boot/grub2/i386-pc").mkdir(parents=True)
    _w(root, "/boot/grub2/grub.cfg", "")
    _grub_default(root)
    _fstab(root)
    _w(root, "/etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n")
    _w(root, "/etc/sysconfig/network", "NETWORKING=yes\n")
    _vmware_tools(root)


def _ifcfg(root: Path, name: str) -> None:
    _w(
        root,
        f"/etc/sysconfig/network-scripts/ifcfg-{name}",
        (
            f"TYPE=Ethernet\nBOOTPROTO=none\nNAME={name}\nDEVICE={name}\nONBOOT=yes\nHWADDR={VMWARE_MAC}\n"
            "IPADDR=172.16.5.20\nPREFIX=24\nGATEWAY=172.16.5.1\nDNS1=172.16.5.2\n"
        ),
    )
    _w(root, "/etc/sysconfig/network-scripts/ifcfg-lo", "DEVICE=lo\nIPADDR=127.0.0.1\nONBOOT=yes\n")


def _nm_keyfile(root: Path, name: str) -> None:
    _w(
        root,
        f"/etc/NetworkManager/system-connections/{name}.nmconnection",
        (
            f"[connection]\nid={name}\nuuid=3c8a1a4e-0000-4000-8000-000000000001\ntype=ethernet\n"
            f"interface-name={name}\n\n[ethernet]\nmac-address={VMWARE_MAC.upper()}\n\n"
            "[ipv4]\naddress1=172.16.9.20/24,172.16.9.1\ndns=172.16.9.2;\nmethod=manual\n\n[ipv6]\nmethod=auto\n"
        ),
        0o600,
    )


def rhel(root: Path) -> dict[str, str]:
    """RHEL 8.9: ifcfg with HWADDR, dracut, grubby, SELinux enforcing."""
    _rhel_like(
        root,
        {
            "NAME": "Red Hat Enterprise Linux",
            "VERSION_ID": "8.9",
            "ID": "rhel",
            "ID_LIKE": "fedora",
            "PRETTY_NAME": "Red Hat Enterprise Linux 8.9 (Ootpa)",
        },
        "rhel",
    )
    _ifcfg(root, "ens192")
    return dict(DEVICES)


def centos(root: Path) -> dict[str, str]:
    """CentOS 7.9: ifcfg eth0-style VMware naming (ens192), an older kernel without gve."""
    _rhel_like(
        root,
        {
            "NAME": "CentOS Linux",
            "VERSION_ID": "7",
            "ID": "centos",
            "ID_LIKE": "rhel fedora",
            "PRETTY_NAME": "CentOS Linux 7 (Core)",
        },
        "centos",
        [m for m in MODULES if m != "gve"],
    )
    _ifcfg(root, "ens192")
    return dict(DEVICES)


def rocky(root: Path) -> dict[str, str]:
    """Rocky Linux 9.3: NetworkManager keyfile pinned to a MAC, cloud-init present."""
    _rhel_like(
        root,
        {
            "NAME": "Rocky Linux",
            "VERSION_ID": "9.3",
            "ID": "rocky",
            "ID_LIKE": "rhel centos fedora",
            "PRETTY_NAME": "Rocky Linux 9.3 (Blue Onyx)",
        },
        "rocky",
    )
    _nm_keyfile(root, "ens192")
    (root / "etc/sysconfig/network-scripts").mkdir(parents=True)
    _w(root, "/etc/sysconfig/network-scripts/readme-ifcfg-rh.txt", "NetworkManager keyfiles are used.\n")
    _cloud_init(root)
    return dict(DEVICES)


def fedora(root: Path) -> dict[str, str]:
    """Fedora 39: NetworkManager keyfile, qemu-guest-agent already present."""
    _rhel_like(
        root,
        {
            "NAME": "Fedora Linux",
            "VERSION_ID": "39",
            "ID": "fedora",
            "PRETTY_NAME": "Fedora Linux 39 (Server Edition)",
        },
        "fedora",
    )
    _nm_keyfile(root, "ens192")
    _w(root, "/usr/bin/qemu-ga", "", 0o755)
    return dict(DEVICES)


def _suse(root: Path, release: dict[str, str], kernel_key: str) -> None:
    _os_release(root, release)
    _elf(root, "/usr/bin/bash")
    kver = KERNELS[kernel_key]
    _kernel(root, kver, f"initrd-{kver}")
    _w(root, "/usr/bin/dracut", "#!/bin/bash\n", 0o755)
    (root / "var/lib/rpm").mkdir(parents=True)
    (root / "boot/grub2/i386-pc").mkdir(parents=True)
    _w(root, "/boot/grub2/grub.cfg", "")
    _grub_default(root, "splash=silent quiet showopts")
    _fstab(root)
    _w(root, "/etc/sysconfig/network/config", 'NETCONFIG_MODULES_ORDER="dns-resolver dns-bind ntp-runtime"\n')
    _w(root, "/etc/sysconfig/network/ifcfg-lo", "IPADDR=127.0.0.1/8\nSTARTMODE=nfsroot\nBOOTPROTO=static\n")
    _w(
        root,
        "/etc/sysconfig/network/ifcfg-eth0",
        ("BOOTPROTO='static'\nSTARTMODE='auto'\nIPADDR='10.9.8.7/24'\nNAME=''\n"),
    )
    _w(root, "/etc/sysconfig/network/routes", "default 10.9.8.1 - -\n")
    _w(
        root,
        "/etc/udev/rules.d/70-persistent-net.rules",
        f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{{address}}=="{VMWARE_MAC}", NAME="eth0"\n',
    )
    _w(root, "/usr/sbin/hv_kvp_daemon", "", 0o755)


def sles(root: Path) -> dict[str, str]:
    """SLES 15 SP5 from Hyper-V: wicked ifcfg static, udev MAC pin, hyper-v daemons."""
    _suse(
        root,
        {
            "NAME": "SLES",
            "VERSION_ID": "15.5",
            "ID": "sles",
            "ID_LIKE": "suse",
            "PRETTY_NAME": "SUSE Linux Enterprise Server 15 SP5",
        },
        "sles",
    )
    return dict(DEVICES)


def opensuse(root: Path) -> dict[str, str]:
    """openSUSE Leap 15.5: same layout as SLES, plus cloud-init."""
    _suse(
        root,
        {
            "NAME": "openSUSE Leap",
            "VERSION_ID": "15.5",
            "ID": "opensuse-leap",
            "ID_LIKE": "suse opensuse",
            "PRETTY_NAME": "openSUSE Leap 15.5",
        },
        "opensuse-leap",
    )
    _cloud_init(root)
    return dict(DEVICES)


WINDOWS_VERSIONS: dict[str, dict[str, str | int]] = {
    "windows2008r2": {
        "ProductName": "Windows Server 2008 R2 Standard",
        "EditionID": "ServerStandard",
        "InstallationType": "Server",
        "CurrentBuildNumber": "7601",
        "CurrentVersion": "6.1",
    },
    "windows2016": {
        "ProductName": "Windows Server 2016 Datacenter",
        "EditionID": "ServerDatacenter",
        "InstallationType": "Server",
        "CurrentBuildNumber": "14393",
        "CurrentMajorVersionNumber": 10,
        "CurrentMinorVersionNumber": 0,
        "CurrentVersion": "6.3",
    },
    "windows2022": {
        "ProductName": "Windows Server 2022 Standard",
        "EditionID": "ServerStandard",
        "InstallationType": "Server",
        "CurrentBuildNumber": "20348",
        "CurrentMajorVersionNumber": 10,
        "CurrentMinorVersionNumber": 0,
        "CurrentVersion": "6.3",
    },
    "windows10": {
        "ProductName": "Windows 10 Enterprise",
        "EditionID": "Enterprise",
        "InstallationType": "Client",
        "CurrentBuildNumber": "19045",
        "CurrentMajorVersionNumber": 10,
        "CurrentMinorVersionNumber": 0,
        "CurrentVersion": "6.3",
    },
    "windows2019": {
        "ProductName": "Windows Server 2019 Standard",
        "EditionID": "ServerStandard",
        "InstallationType": "Server",
        "CurrentBuildNumber": "17763",
        "CurrentBuild": "17763",
        "CurrentMajorVersionNumber": 10,
        "CurrentMinorVersionNumber": 0,
        "CurrentVersion": "6.3",
    },
    "windows11": {
        "ProductName": "Windows 10 Pro",
        "EditionID": "Professional",
        "InstallationType": "Client",
        "CurrentBuildNumber": "22631",
        "CurrentBuild": "22631",
        "DisplayVersion": "23H2",
        "CurrentMajorVersionNumber": 10,
        "CurrentMinorVersionNumber": 0,
        "CurrentVersion": "6.3",
    },
    "windows2012r2": {
        "ProductName": "Windows Server 2012 R2 Datacenter",
        "EditionID": "ServerDatacenter",
        "InstallationType": "Server",
        "CurrentBuildNumber": "9600",
        "CurrentVersion": "6.3",
    },
}


def windows(root: Path, version: str = "windows2019") -> dict[str, str]:
    """A Windows system volume: the real SOFTWARE hive (made with hivex), NTFS-style mixed case names."""
    from tests.guests.winhive import make_hive

    make_hive(
        root / "Windows/System32/config/SOFTWARE",
        {"Microsoft\\Windows NT\\CurrentVersion": WINDOWS_VERSIONS[version]},
    )
    (root / "Windows/System32/config/SYSTEM").write_bytes(b"")
    (root / "Windows/SysWOW64").mkdir(parents=True)
    (root / "Program Files/VMware/VMware Tools").mkdir(parents=True)
    return {}


BUILDERS: dict[str, Callable[[Path], dict[str, str]]] = {
    "debian": debian,
    "ubuntu": ubuntu,
    "rhel": rhel,
    "centos": centos,
    "rocky": rocky,
    "fedora": fedora,
    "sles": sles,
    "opensuse": opensuse,
}


def build_tree(name: str, root: Path) -> dict[str, str]:
    """Build the synthetic tree ``name`` (a key of ``BUILDERS``, or ``windows2019``/``windows11``...)."""
    root.mkdir(parents=True, exist_ok=True)
    if name in WINDOWS_VERSIONS:
        return windows(root, name)
    return BUILDERS[name](root)


#: debconf's answer as grub-pc's installation on a VMware guest leaves it (its disk has no by-id link)
GRUB_PC_DEBCONF = (
    "Name: grub-pc/install_devices\nTemplate: grub-pc/install_devices\nValue: /dev/sda\nOwners: grub-pc\n"
    "Flags: seen\n\n"
)


def build_os_disk(path: Path, size: int = 256 * 1024**2) -> str:
    """A raw GPT disk whose ext4 root holds the synthetic Debian tree, without a kernel, with grub-pc.

    libguestfs finds the OS and morphing runs on it for real (its in-guest commands fail: the tree has
    no shell, and they are allowed to), but with no kernel there is no initramfs to rebuild and nothing
    to boot: a real morph for the price of one appliance launch. Returns the disk's partition-table
    UUID (the GPT disk GUID, as blkid spells it).
    """
    import shutil
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        debian(root)
        for kernel_file in (root / "boot").glob("*-" + KERNELS["debian"]):
            kernel_file.unlink()
        shutil.rmtree(root / "lib/modules")
        (root / "etc/default/grub").unlink()
        _w(root, "/etc/fstab", "LABEL=rootfs / ext4 errors=remount-ro 0 1\n")
        status = root / "var/lib/dpkg/status"
        status.write_text(status.read_text() + "Package: grub-pc\nStatus: install ok installed\n\n")
        _w(root, "/var/cache/debconf/config.dat", GRUB_PC_DEBCONF)
        with open(path, "wb") as f:
            f.truncate(size)
        # the filesystem exactly as large as its partition: one larger does not mount
        sectors = size // 512 - 2 * 2048
        subprocess.run(["sfdisk", "-q", str(path)], input=f"label: gpt\nstart=2048, size={sectors}, type=linux\n",
                       text=True, check=True, capture_output=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", tmp, "-E", f"offset={2048 * 512}",
                        str(path), f"{sectors // 2}k"], check=True, capture_output=True)
    disk_id = subprocess.run(["sfdisk", "--disk-id", str(path)], check=True, capture_output=True, text=True)
    return disk_id.stdout.strip().lower()
