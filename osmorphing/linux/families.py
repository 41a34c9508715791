"""The three Linux families: Debian/Ubuntu, RHEL/CentOS/Rocky/Fedora, SUSE/openSUSE."""

from __future__ import annotations

import re

from osmorphing.linux.base import LinuxMorpher
from osmorphing.netconf import parse_shell_vars

MODULES_FILE = "/etc/initramfs-tools/modules"
DRACUT_CONF = "/etc/dracut.conf.d/90-sterna.conf"
SYSCONFIG_KERNEL = "/etc/sysconfig/kernel"


def _major(version: str) -> int:
    m = re.match(r"\d+", version)
    return int(m.group()) if m else 0


class DebianMorpher(LinuxMorpher):
    """Debian and Ubuntu: apt/dpkg, initramfs-tools, update-grub, ifupdown or netplan."""

    family = "debian"

    def installed_package(self, agent: str) -> str:
        # Ubuntu packages the Azure agent as walinuxagent, Debian as waagent.
        if agent == "waagent" and self._dpkg_installed("walinuxagent"):
            return "walinuxagent"
        return self.packages[agent]

    def _dpkg_installed(self, package: str) -> bool:
        status = "/var/lib/dpkg/status"
        if not self.guest.is_file(status):
            return False
        return (
            re.search(
                rf"^Package: {re.escape(package)}\n(?:.+\n)*?Status: install ok installed",
                self.guest.read_text(status),
                re.MULTILINE,
            )
            is not None
        )

    def remove_packages_command(self, packages: list[str]) -> list[str]:
        return ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q", "purge", *packages]

    def default_network_style(self) -> str:
        if self.info.distribution == "ubuntu" or self.guest.is_dir("/etc/netplan"):
            return "netplan"
        return "ifupdown"

    def regenerate_initramfs(self, drivers: list[str]) -> None:
        existing = self.guest.read_text(MODULES_FILE) if self.guest.is_file(MODULES_FILE) else ""
        present = {
            line.split()[0].replace("-", "_")
            for line in existing.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        }
        add = [d for d in drivers if d not in present]
        if add:
            block = f"# Added by Sterna OS morphing for {self.target.name}\n" + "".join(f"{d}\n" for d in add)
            content = existing + ("" if not existing or existing.endswith("\n") else "\n") + block
            self.editor.write(
                MODULES_FILE, content, f"initramfs modules for {self.target.name}: {' '.join(add)}"
            )
        if self.info.kernels:
            self.editor.run(
                ["update-initramfs", "-u", "-k", "all"],
                f"regenerate the initramfs of kernel(s) {', '.join(self.info.kernels)}",
            )

    def bootloader_commands(self) -> list[list[str]]:
        return [["update-grub"]]


class RedHatMorpher(LinuxMorpher):
    """RHEL, CentOS, Rocky, AlmaLinux, Oracle, Fedora: rpm, dracut, grubby, grub2-mkconfig, ifcfg/keyfiles."""

    family = "redhat"
    packages = {**LinuxMorpher.packages, "waagent": "WALinuxAgent"}

    def remove_packages_command(self, packages: list[str]) -> list[str]:
        # rpm works offline; yum/dnf would try to reach the source's repositories.
        return ["rpm", "-e", *packages]

    def default_network_style(self) -> str:
        major = _major(self.info.version)
        if (
            self.info.distribution == "fedora"
            or major >= 9
            or not self.guest.is_dir("/etc/sysconfig/network-scripts")
        ):
            return "networkmanager"
        return "ifcfg"

    def family_specific(self) -> None:
        if self.guest.is_file("/etc/selinux/config"):
            mode = parse_shell_vars(self.guest.read_text("/etc/selinux/config")).get("SELINUX", "")
            if mode in ("enforcing", "permissive"):
                self.editor.write(
                    "/.autorelabel",
                    "",
                    f"SELinux is {mode}: relabel at first boot (files written offline carry no labels)",
                )

    def regenerate_initramfs(self, drivers: list[str]) -> None:
        write_dracut_conf(self, drivers)
        for kernel in self.info.kernels:
            self.editor.run(
                ["dracut", "-f", "--kver", kernel], f"regenerate the initramfs of kernel {kernel}"
            )

    def bootloader_commands(self) -> list[list[str]]:
        commands = []
        if self.guest.exists("/usr/sbin/grubby") or self.guest.exists("/sbin/grubby"):
            commands.append(
                [
                    "grubby",
                    "--update-kernel=ALL",
                    "--remove-args=console net.ifnames biosdevname",
                    f"--args={' '.join(self.kernel_args())}",
                ]
            )
        commands.append(["grub2-mkconfig", "-o", grub2_cfg(self)])
        return commands


class SuseMorpher(LinuxMorpher):
    """SLES and openSUSE: rpm, dracut (mkinitrd on old releases), grub2-mkconfig, wicked or keyfiles."""

    family = "suse"
    packages = {**LinuxMorpher.packages, "waagent": "python-azure-agent", "hyperv-daemons": "hyper-v"}

    def remove_packages_command(self, packages: list[str]) -> list[str]:
        return ["rpm", "-e", *packages]

    def default_network_style(self) -> str:
        return "wicked" if self.guest.is_dir("/etc/sysconfig/network") else "networkmanager"

    def regenerate_initramfs(self, drivers: list[str]) -> None:
        if self.info.initramfs_tool == "mkinitrd":
            values = (
                parse_shell_vars(self.guest.read_text(SYSCONFIG_KERNEL))
                if self.guest.is_file(SYSCONFIG_KERNEL)
                else {}
            )
            current = values.get("INITRD_MODULES", "").split()
            add = [d for d in drivers if d not in current]
            if add:
                text = self.guest.read_text(SYSCONFIG_KERNEL) if self.guest.is_file(SYSCONFIG_KERNEL) else ""
                line = f'INITRD_MODULES="{" ".join(current + add)}"'
                text = (
                    re.sub(r"^INITRD_MODULES=.*$", line, text, flags=re.MULTILINE)
                    if "INITRD_MODULES=" in text
                    else text + line + "\n"
                )
                self.editor.write(SYSCONFIG_KERNEL, text, f"INITRD_MODULES += {' '.join(add)}")
            self.editor.run(["mkinitrd"], "regenerate the initrd of every kernel")
            return
        write_dracut_conf(self, drivers)
        for kernel in self.info.kernels:
            self.editor.run(
                ["dracut", "-f", "--kver", kernel], f"regenerate the initramfs of kernel {kernel}"
            )

    def bootloader_commands(self) -> list[list[str]]:
        return [["grub2-mkconfig", "-o", grub2_cfg(self)]]


def write_dracut_conf(morpher: LinuxMorpher, drivers: list[str]) -> None:
    content = (
        f"# Written by Sterna OS morphing: drivers the {morpher.target.name} platform boots with\n"
        f'add_drivers+=" {" ".join(drivers)} "\n'
    )
    morpher.editor.write(
        DRACUT_CONF, content, f"dracut drivers for {morpher.target.name}: {' '.join(drivers)}"
    )


def grub2_cfg(morpher: LinuxMorpher) -> str:
    """The grub.cfg the guest boots from: the EFI vendor directory's one when it is a real config file."""
    if morpher.info.firmware == "uefi":
        for vendor in morpher.guest.listdir("/boot/efi/EFI"):
            path = f"/boot/efi/EFI/{vendor}/grub.cfg"
            # RHEL >= 9.3 and Fedora keep a stub there that sources /boot/grub2/grub.cfg.
            if morpher.guest.is_file(path) and "configfile" not in morpher.guest.read_text(path):
                return path
    return "/boot/grub2/grub.cfg"


FAMILY_MORPHERS: dict[str, type[LinuxMorpher]] = {
    "debian": DebianMorpher,
    "redhat": RedHatMorpher,
    "suse": SuseMorpher,
}
