"""The three Linux families: Debian/Ubuntu, RHEL/CentOS/Rocky/Fedora, SUSE/openSUSE."""

from __future__ import annotations

import re

from osmorphing.linux.base import LinuxMorpher
from osmorphing.netconf import parse_shell_vars

MODULES_FILE = "/etc/initramfs-tools/modules"
DEBCONF_DB = "/var/cache/debconf/config.dat"
GRUB_INSTALL_DEVICES = "grub-pc/install_devices"
#: after 60-persistent-storage.rules, whose blkid import sets ID_PART_TABLE_UUID on whole disks
BOOT_DISK_RULES = "/etc/udev/rules.d/61-sterna-boot-disk.rules"
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

    def family_specific(self) -> None:
        self.point_grub_pc_at_boot_disk()

    def agent_package(self, agent: str) -> str:
        if agent == "waagent" and self.info.distribution == "ubuntu":
            return "walinuxagent"
        return self.packages[agent]

    def cached_package(self, package: str) -> str | None:
        # Debian's versions may start with an epoch, which apt writes as "1%3a" in the file name.
        return self.find_in_cache(("/var/cache/apt/archives",), package, "_", ".deb", depth=0)

    def _apt_sources(self) -> list[str]:
        """``URI suite`` of each enabled apt source (one-line ``.list`` and deb822 ``.sources`` files)."""
        sources: list[str] = []
        files = ["/etc/apt/sources.list", *self.guest.glob("/etc/apt/sources.list.d", ".list")]
        for path in files:
            if not self.guest.is_file(path):
                continue
            for line in self.guest.read_text(path).splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    sources.append(f"{words[1]} {words[2]}")
        for path in self.guest.glob("/etc/apt/sources.list.d", ".sources"):
            for stanza in self.guest.read_text(path).split("\n\n"):
                fields = parse_deb822(stanza)
                if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                    continue
                suite = (fields.get("suites", "").split() or [""])[0]
                sources.extend(f"{uri} {suite}".strip() for uri in fields.get("uris", "").split())
        return sources

    def local_repositories(self) -> list[str]:
        return [s for s in self._apt_sources() if s.startswith("file:")]

    def remote_repositories(self) -> list[str]:
        return [s for s in self._apt_sources() if not s.startswith("file:")]

    def install_packages_command(self, package: str, *, cache_only: bool) -> list[str]:
        # --no-download: a dependency missing from the cache fails the install instead of reaching out
        return ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-y", "-q",
                *(["--no-download"] if cache_only else []), "install", package]

    def point_grub_pc_at_boot_disk(self) -> None:
        """Name the boot disk in debconf's ``grub-pc/install_devices`` by its partition-table UUID.

        grub-pc's postinst, on every upgrade, checks that each device in that answer exists and runs
        ``grub-install`` on what it resolves to (``readlink -f``); the choices it offers are the disk's
        ``/dev/disk/by-id`` links, or its kernel name when it has none. A source's ``/dev/sda`` is not the
        disk on the target (``/dev/vda``, ``/dev/nvme0n1``), and a virtio disk without a serial has no
        by-id link, so the next grub-pc upgrade would leave the boot code older than ``/boot/grub``.
        A partition (a by-partuuid path) is no answer either: grub-install would write that partition's
        boot sector, not the disk's. The disk's own partition-table UUID travels with its bytes, so a
        udev rule gives it a by-id link on any target, and debconf names that link.
        """
        if not self._dpkg_installed("grub-pc"):
            return
        if not self.guest.is_file(DEBCONF_DB):
            self.editor.warn(f"grub-pc is installed but {DEBCONF_DB} is missing; {GRUB_INSTALL_DEVICES} not set")
            return
        ptuuid = self.guest.boot_disk_ptuuid()
        text = self.guest.read_text(DEBCONF_DB)
        old = _debconf_value(text, GRUB_INSTALL_DEVICES)
        if ptuuid is None:
            self.editor.warn(
                f"debconf {GRUB_INSTALL_DEVICES} left at {old or '(empty)'}: the boot disk has no partition-table "
                "UUID Sterna can read (LVM, RAID or no partition table); set it after boot with "
                "dpkg-reconfigure grub-pc"
            )
            return
        link = f"/dev/disk/by-id/sterna-ptuuid-{ptuuid}"
        self.editor.write(
            BOOT_DISK_RULES,
            "# Written by Sterna OS morphing: a stable name for the boot disk (its partition-table UUID),\n"
            f"# which debconf's {GRUB_INSTALL_DEVICES} names so grub-pc upgrades find the disk on any platform.\n"
            'ACTION!="remove", SUBSYSTEM=="block", ENV{DEVTYPE}=="disk", '
            f'ENV{{ID_PART_TABLE_UUID}}=="{ptuuid}", SYMLINK+="disk/by-id/sterna-ptuuid-{ptuuid}"\n',
            f"udev link {link} for the boot disk (partition-table UUID {ptuuid})",
        )
        if old == link:
            return
        self.editor.backup(DEBCONF_DB)
        self.editor.write(
            DEBCONF_DB,
            _set_debconf_value(text, GRUB_INSTALL_DEVICES, link, owner="grub-pc"),
            f"debconf {GRUB_INSTALL_DEVICES}: {old or '(empty)'} -> {link} (the boot disk by its partition-table "
            "UUID: grub-pc upgrades run grub-install on it on the target)",
        )

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


def _debconf_value(db: str, name: str) -> str | None:
    """The ``Value`` of question ``name`` in a debconf ``config.dat`` (``None``: no such question)."""
    for stanza in db.split("\n\n"):
        lines = stanza.strip("\n").splitlines()
        if f"Name: {name}" in lines:
            return next((line[len("Value: "):] for line in lines if line.startswith("Value: ")), "")
    return None


def _set_debconf_value(db: str, name: str, value: str, owner: str) -> str:
    """``db`` with question ``name`` answered ``value`` (and marked seen when it had to be added)."""
    stanzas = db.split("\n\n")
    for i, stanza in enumerate(stanzas):
        lines = stanza.strip("\n").splitlines()
        if f"Name: {name}" not in lines:
            continue
        if any(line.startswith("Value:") for line in lines):
            lines = [f"Value: {value}" if line.startswith("Value:") else line for line in lines]
        else:
            at = next((n + 1 for n, line in enumerate(lines) if line.startswith("Template:")), 1)
            lines.insert(at, f"Value: {value}")
        body = stanza.strip("\n")
        start = stanza.index(body)
        stanzas[i] = stanza[:start] + "\n".join(lines) + stanza[start + len(body):]
        return "\n\n".join(stanzas)
    added = f"Name: {name}\nTemplate: {name}\nValue: {value}\nOwners: {owner}\nFlags: seen\n"
    return db.rstrip("\n") + ("\n\n" if db.strip() else "") + added + "\n"


def parse_deb822(stanza: str) -> dict[str, str]:
    """One deb822 stanza's fields, lower-cased names, continuation lines joined."""
    fields: dict[str, str] = {}
    last = ""
    for line in stanza.splitlines():
        if line[:1] in (" ", "\t") and last:
            fields[last] += " " + line.strip()
        elif ":" in line and not line.startswith("#"):
            last, value = line.split(":", 1)
            last = last.strip().lower()
            fields[last] = value.strip()
    return fields


def rpm_repositories(morpher: LinuxMorpher, directory: str) -> list[tuple[str, str]]:
    """``(id, url)`` of each enabled repository in the ``.repo`` files of ``directory`` (yum, dnf, zypper)."""
    repos: list[tuple[str, str]] = []
    for path in morpher.guest.glob(directory, ".repo"):
        section, values = "", dict[str, str]()
        for raw in [*morpher.guest.read_text(path).splitlines(), "[]"]:
            line = raw.strip()
            if line.startswith("[") and line.endswith("]"):
                url = values.get("baseurl") or values.get("mirrorlist") or values.get("metalink")
                if section and url and values.get("enabled", "1") not in ("0", "no", "false"):
                    repos.append((section, url.split()[0]))
                section, values = line[1:-1], {}
            elif "=" in line and not line.startswith(("#", ";")):
                key, value = line.split("=", 1)
                values[key.strip().lower()] = value.strip()
    return repos


LOCAL_URL = ("file:", "dir:")


class RedHatMorpher(LinuxMorpher):
    """RHEL, CentOS, Rocky, AlmaLinux, Oracle, Fedora: rpm, dracut, grubby, grub2-mkconfig, ifcfg/keyfiles."""

    family = "redhat"
    packages = {**LinuxMorpher.packages, "waagent": "WALinuxAgent"}

    def cached_package(self, package: str) -> str | None:
        return self.find_in_cache(("/var/cache/dnf", "/var/cache/yum", "/var/cache/libdnf5"), package, "-", ".rpm")

    def local_repositories(self) -> list[str]:
        return [f"{rid} {url}" for rid, url in rpm_repositories(self, "/etc/yum.repos.d") if url.startswith(LOCAL_URL)]

    def remote_repositories(self) -> list[str]:
        return [f"{rid} {url}" for rid, url in rpm_repositories(self, "/etc/yum.repos.d")
                if not url.startswith(LOCAL_URL)]

    def install_packages_command(self, package: str, *, cache_only: bool) -> list[str]:
        tool = "dnf" if self.guest.exists("/usr/bin/dnf") or self.guest.exists("/usr/bin/dnf5") else "yum"
        if cache_only:
            return [tool, "-y", "-C", "install", package]
        local = [rid for rid, url in rpm_repositories(self, "/etc/yum.repos.d") if url.startswith(LOCAL_URL)]
        return [tool, "-y", "--disablerepo=*", *(f"--enablerepo={rid}" for rid in local), "install", package]

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
                    "--remove-args=" + " ".join(["console", *(a.rstrip("=") for a in self.replaced_naming_args())]),
                    f"--args={' '.join(self.kernel_args())}",
                ]
            )
        commands.append(["grub2-mkconfig", "-o", grub2_cfg(self)])
        return commands


class SuseMorpher(LinuxMorpher):
    """SLES and openSUSE: rpm, dracut (mkinitrd on old releases), grub2-mkconfig, wicked or keyfiles."""

    family = "suse"
    packages = {**LinuxMorpher.packages, "waagent": "python-azure-agent", "hyperv-daemons": "hyper-v"}

    def cached_package(self, package: str) -> str | None:
        return self.find_in_cache(("/var/cache/zypp/packages",), package, "-", ".rpm")

    def local_repositories(self) -> list[str]:
        return [f"{rid} {url}" for rid, url in rpm_repositories(self, "/etc/zypp/repos.d") if url.startswith(LOCAL_URL)]

    def remote_repositories(self) -> list[str]:
        return [f"{rid} {url}" for rid, url in rpm_repositories(self, "/etc/zypp/repos.d")
                if not url.startswith(LOCAL_URL)]

    def install_packages_command(self, package: str, *, cache_only: bool) -> list[str]:
        # --no-refresh: the remote repositories' metadata cannot be fetched; a local one's needs no refresh
        return ["zypper", "--non-interactive", "--no-refresh", "install", package]

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
