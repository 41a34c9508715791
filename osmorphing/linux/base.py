"""The morphing steps every Linux family shares; families override the distribution-specific parts."""

from __future__ import annotations

import re
import shlex
from typing import ClassVar

from osmorphing.editor import GuestEditor
from osmorphing.models import MorphOptions, NetworkInterface, OsInfo
from osmorphing.netconf import NewInterface, read_network, render
from osmorphing.platforms import Platform, agents_to_remove

GRUB_DEFAULT = "/etc/default/grub"
CLOUD_CFG = "/etc/cloud/cloud.cfg.d/95-sterna.cfg"
DEVICE_NAME = re.compile(r"^/dev/(?:sd[a-z]+|vd[a-z]+|xvd[a-z]+|hd[a-z]+)\d*$|^/dev/nvme\d+n\d+(?:p\d+)?$")
#: systemd units of each agent (disabled when its package cannot be removed)
AGENT_UNITS: dict[str, tuple[str, ...]] = {
    "open-vm-tools": ("open-vm-tools.service", "vmtoolsd.service", "vgauth.service", "vgauthd.service"),
    "hyperv-daemons": (
        "hv-kvp-daemon.service",
        "hv-vss-daemon.service",
        "hv-fcopy-daemon.service",
        "hypervkvpd.service",
        "hypervvssd.service",
        "hypervfcopyd.service",
    ),
    "waagent": ("walinuxagent.service", "waagent.service"),
    "google-guest-agent": (
        "google-guest-agent.service",
        "google-startup-scripts.service",
        "google-shutdown-scripts.service",
    ),
    "qemu-guest-agent": ("qemu-guest-agent.service",),
}
#: kernel arguments that name interfaces ``ethN``, as the network step's configuration expects: part of that step
NAMING_ARGS = ("net.ifnames=0", "biosdevname=0")
CLOUD_INIT_UNITS = (
    "cloud-init-local.service",
    "cloud-init.service",
    "cloud-config.service",
    "cloud-final.service",
)


class LinuxMorpher:
    """Applies the target platform's changes to one Linux guest, recording each in ``editor``."""

    family: ClassVar[str] = "linux"
    #: agent name (``OsInfo.agents``) → the family's package name
    packages: ClassVar[dict[str, str]] = {
        "open-vm-tools": "open-vm-tools",
        "hyperv-daemons": "hyperv-daemons",
        "waagent": "waagent",
        "google-guest-agent": "google-guest-agent",
        "qemu-guest-agent": "qemu-guest-agent",
    }

    def __init__(
        self,
        editor: GuestEditor,
        info: OsInfo,
        target: Platform,
        source_platform: str | None,
        options: MorphOptions,
    ) -> None:
        self.editor = editor
        self.guest = editor.guest
        self.info = info
        self.target = target
        self.source_platform = source_platform
        self.options = options

    # -- entry point -------------------------------------------------------------------------------
    def morph(self) -> None:
        """All steps, in order: agents, network, fstab, kernel command line, cloud-init, initramfs."""
        self.remove_source_agents()
        self.install_target_agents()
        self.configure_network()
        self.rewrite_fstab()
        self.configure_kernel_cmdline()
        self.configure_cloud_init()
        self.family_specific()
        self.regenerate_initramfs(self.available_drivers())
        self.regenerate_bootloader()

    # -- family hooks ----------------------------------------------------------------------------
    def remove_packages_command(self, packages: list[str]) -> list[str]:
        raise NotImplementedError

    def default_network_style(self) -> str:
        raise NotImplementedError

    def regenerate_initramfs(self, drivers: list[str]) -> None:
        raise NotImplementedError

    def bootloader_commands(self) -> list[list[str]]:
        raise NotImplementedError

    def family_specific(self) -> None:
        """Extra changes a family needs (SELinux relabel, ...)."""

    # -- agents ----------------------------------------------------------------------------------
    def installed_package(self, agent: str) -> str:
        return self.packages[agent]

    def remove_source_agents(self) -> None:
        if not self.options.remove_source_tools:
            return
        agents = agents_to_remove(self.info.agents, self.source_platform, self.target.name)
        if not agents:
            return
        packages = [self.installed_package(a) for a in agents]
        argv = self.remove_packages_command(packages)
        detail = f"remove {', '.join(agents)} (tools of the source platform)"
        if self.editor.run(argv, detail, check=False) is None:
            for agent in agents:
                self.disable_units(AGENT_UNITS.get(agent, ()), f"{agent} could not be uninstalled")

    def disable_units(self, units: tuple[str, ...], why: str) -> None:
        base = "/etc/systemd/system"
        for wants in self.guest.listdir(base):
            if not wants.endswith(".wants"):
                continue
            for unit in units:
                link = f"{base}/{wants}/{unit}"
                if self.guest.is_symlink(link):
                    self.editor.delete(link, f"disable {unit}: {why}")

    def install_target_agents(self) -> None:
        """Install the target's agents the guest lacks, from what its own package manager can reach.

        The appliance gives the guest no network, so a package can come only from the guest's package
        cache or a local (``file:``) repository; otherwise an event says why not and how to install it.
        """
        for agent in self.target.agents:
            if agent in self.info.agents or agent == "hyperv-daemons":  # Hyper-V drivers are in-kernel
                continue
            package = self.agent_package(agent)
            cached = self.cached_package(package)
            local = self.local_repositories()
            if cached is None and not local:
                remote = self.remote_repositories()
                self.editor.warn(
                    f"{agent} not installed for {self.target.name}: no {package} package in the guest's "
                    "package cache and no local repository, and "
                    + (f"its repositories ({'; '.join(remote)}) need the network, which OS morphing does not "
                       "give the guest" if remote else "it has no repository configured")
                    + f"; install {package} on the running instance"
                )
                continue
            origin = f"the guest's package cache ({cached})" if cached else f"its local repository ({local[0]})"
            argv = self.install_packages_command(cached or package, cache_only=cached is not None)
            if self.editor.run(argv, f"install {agent} for {self.target.name} from {origin}", check=False) is None:
                self.editor.warn(f"{agent} not installed for {self.target.name}: the guest's package manager could "
                                 f"not install it from {origin} (its output is in the event above)")

    def agent_package(self, agent: str) -> str:
        """The family's package name for a target agent."""
        return self.packages[agent]

    def cached_package(self, package: str) -> str | None:
        """A package file for ``package`` in the guest's package cache (guest path), or ``None``."""
        return None

    def local_repositories(self) -> list[str]:
        """The guest's repositories that need no network (``file:`` URLs)."""
        return []

    def remote_repositories(self) -> list[str]:
        """The guest's other repositories, for the event that says why an agent was not installed."""
        return []

    def install_packages_command(self, package: str, *, cache_only: bool) -> list[str]:
        raise NotImplementedError

    def find_in_cache(self, roots: tuple[str, ...], package: str, separator: str, suffix: str,
                      depth: int = 4) -> str | None:
        """The newest-named ``<package><separator><version>…<suffix>`` file under ``roots`` (guest paths)."""
        found: list[str] = []
        pending = [(root, 0) for root in roots]
        while pending:
            directory, level = pending.pop()
            for name in self.guest.listdir(directory):
                path = f"{directory}/{name}"
                rest = name[len(package) + len(separator):]
                if name.startswith(package + separator) and name.endswith(suffix) and rest[:1].isdigit():
                    found.append(path)
                elif level < depth and self.guest.is_dir(path) and not self.guest.is_symlink(path):
                    pending.append((path, level + 1))
        return max(found) if found else None

    # -- network ---------------------------------------------------------------------------------
    def choose_network_style(self, styles_in_use: list[str]) -> str:
        for style in ("netplan", "networkmanager", "ifcfg", "wicked", "ifupdown", "systemd-networkd"):
            if style in styles_in_use:
                return style
        return self.default_network_style()

    def target_interfaces(self, old: list[NetworkInterface]) -> list[NewInterface]:
        """``eth0..ethN``: DHCP, or with ``keep_static_ip`` the n-th old interface's static addresses."""
        unique: list[NetworkInterface] = []
        for iface in old:
            if iface.name not in [u.name for u in unique]:
                unique.append(iface)
        new: list[NewInterface] = []
        if self.options.keep_static_ip:
            for index, iface in enumerate(unique):
                static = iface.mode == "static" and bool(iface.addresses)
                new.append(
                    NewInterface(
                        name=f"eth{index}",
                        dhcp=not static,
                        addresses=list(iface.addresses) if static else [],
                        gateway=iface.gateway if static else None,
                        mtu=self.target.mtu,
                    )
                )
        while len(new) < max(1, len(self.options.nics)):
            new.append(NewInterface(name=f"eth{len(new)}", mtu=self.target.mtu))
        return new

    def configure_network(self) -> None:
        state = read_network(self.guest)
        if self.options.skip_network:
            self.skip_network(state.interfaces, state.config_files, state.pin_files)
            return
        in_use = sorted({i.style for i in state.interfaces}, key=state.styles.index)
        style = self.choose_network_style(in_use)
        new = self.target_interfaces(state.interfaces)
        files = render(style, new)
        summary = ", ".join(
            f"{n.name} "
            + ("dhcp" if n.dhcp else "static " + " ".join(n.addresses))
            + (f" mtu {n.mtu}" if n.mtu else "")
            for n in new
        )
        old_summary = (
            ", ".join(
                f"{i.name} {i.mode}"
                + (f" {' '.join(i.addresses)}" if i.addresses else "")
                + (f" (MAC {i.mac_address})" if i.mac_address else "")
                for i in state.interfaces
            )
            or "none"
        )
        for path in state.config_files:
            if path in files:
                if self.guest.read_text(path) != files[path][0]:
                    self.editor.backup(path)
            else:
                self.editor.retire(
                    path, f"old interface configuration ({old_summary}) does not match the target's NICs"
                )
        for path in state.pin_files:
            self.editor.retire(path, "pins interface names to the source platform's MAC addresses")
        for path, (content, mode) in files.items():
            self.editor.write(path, content, f"{style}: {summary} (was: {old_summary})", mode)

    def skip_network(self, interfaces: list[NetworkInterface], configs: list[str], pins: list[str]) -> None:
        """Say what the skipped step leaves as it is: on new NICs, that may be no network at all."""
        found = ", ".join(f"{i.name} {i.mode}" + (f" (MAC {i.mac_address})" if i.mac_address else "")
                          for i in interfaces) or "none"
        self.editor.event(
            "network step skipped at the user's request (destination_environment.skip_os_morphing_network): "
            f"interfaces left as configured: {found} ({', '.join(configs) or 'no configuration file'})"
            + (f"; MAC pins kept: {', '.join(pins)}" if pins else "")
            + "; interface names left to the guest; on the target's NICs it has only the network this "
            "configuration gives it"
        )
        if self.options.keep_static_ip:
            self.editor.warn("keep_static_ip has no effect: the network step it belongs to was skipped "
                             "(skip_os_morphing_network)")

    # -- fstab -----------------------------------------------------------------------------------
    def rewrite_fstab(self) -> None:
        if not self.guest.is_file("/etc/fstab"):
            return
        lines = self.guest.read_text("/etc/fstab").splitlines(keepends=True)
        changed: list[str] = []
        for i, line in enumerate(lines):
            fields = line.split("#", 1)[0].split()
            if len(fields) < 2:
                continue
            spec = fields[0]
            if spec.startswith(("/dev/disk/by-id/", "/dev/disk/by-path/")):
                self.editor.warn(
                    f"/etc/fstab mounts {fields[1]} from {spec}, a name tied to the source hardware"
                )
                continue
            if not DEVICE_NAME.match(spec):
                continue
            uuid = self.guest.device_uuid(spec)
            if not uuid:
                self.editor.warn(f"/etc/fstab: no filesystem UUID found for {spec} ({fields[1]}); left as is")
                continue
            lines[i] = line.replace(spec, f"UUID={uuid}", 1)
            changed.append(f"{spec} -> UUID={uuid} ({fields[1]})")
        if changed:
            self.editor.backup("/etc/fstab")
            self.editor.write(
                "/etc/fstab", "".join(lines), "device names replaced by UUIDs: " + "; ".join(changed)
            )

    # -- kernel command line ---------------------------------------------------------------------
    def kernel_args(self) -> list[str]:
        args = ["console=tty0", f"console={self.options.serial_console}"]
        return args if self.options.skip_network else [*args, *NAMING_ARGS]

    def replaced_naming_args(self) -> tuple[str, ...]:
        """The interface-naming arguments (``name=``) that ``kernel_args`` replaces: none when the network
        step is skipped, which leaves the guest's own naming, whatever it is."""
        return () if self.options.skip_network else tuple(a.split("=", 1)[0] + "=" for a in NAMING_ARGS)

    def configure_kernel_cmdline(self) -> None:
        if not self.guest.is_file(GRUB_DEFAULT):
            if self.info.bootloader:
                self.editor.warn(
                    f"{GRUB_DEFAULT} not found; kernel command line not changed "
                    f"(bootloader: {self.info.bootloader})"
                )
            return
        text = self.guest.read_text(GRUB_DEFAULT)
        notes: list[str] = []

        def edit_var(src: str, name: str, transform: object) -> str:
            pattern = re.compile(rf'^{name}=(["\']?)(.*?)\1\s*$', re.MULTILINE)
            m = pattern.search(src)
            old = m.group(2) if m else ""
            new = transform(old)  # type: ignore[operator]
            if m and new == old:
                return src
            line = f'{name}="{new}"'
            return pattern.sub(lambda _m: line, src, count=1) if m else src.rstrip("\n") + f"\n{line}\n"

        def cmdline(old: str) -> str:
            drop = ("console=", *self.replaced_naming_args(), "cloud-init=disabled")
            words = [w for w in shlex.split(old) if not w.startswith(drop)]
            out = []
            for word in words:
                uuid = (
                    self.guest.device_uuid(word[5:])
                    if word.startswith("root=") and DEVICE_NAME.match(word[5:])
                    else None
                )
                if uuid:
                    notes.append(f"{word} -> root=UUID={uuid}")
                out.append(f"root=UUID={uuid}" if uuid else word)
            return " ".join(out + self.kernel_args())

        def default_cmdline(old: str) -> str:
            drop = ("console=ttyS", *self.replaced_naming_args(), "cloud-init=disabled")
            return " ".join(w for w in shlex.split(old) if not w.startswith(drop))

        new = edit_var(text, "GRUB_CMDLINE_LINUX", cmdline)
        new = edit_var(new, "GRUB_CMDLINE_LINUX_DEFAULT", default_cmdline)
        new = edit_var(new, "GRUB_TERMINAL", lambda _old: "console serial")
        new = edit_var(new, "GRUB_SERIAL_COMMAND", lambda _old: "serial --speed=115200")
        if re.search(r"^GRUB_DISABLE_LINUX_UUID=['\"]?true", new, re.MULTILINE):
            new = re.sub(
                r"^GRUB_DISABLE_LINUX_UUID=.*$", "GRUB_DISABLE_LINUX_UUID=false", new, flags=re.MULTILINE
            )
            notes.append("GRUB_DISABLE_LINUX_UUID=false (root by UUID)")
        if new != text:
            self.editor.backup(GRUB_DEFAULT)
            self.editor.write(
                GRUB_DEFAULT,
                new,
                "kernel command line: "
                + " ".join(self.kernel_args())
                + (" (serial console)" if self.options.skip_network else " (serial console, eth* names)")
                + "; GRUB on console and serial"
                + ("; " + "; ".join(notes) if notes else ""),
            )

    # -- cloud-init ------------------------------------------------------------------------------
    def configure_cloud_init(self) -> None:
        if "cloud-init" not in self.info.agents:
            self.editor.warn(
                f"cloud-init is not installed; the instance will not read {self.target.name} "
                "metadata (OS morphing installs only the platform's own agent, not cloud-init)"
            )
            return
        body = [
            f"# Written by Sterna OS morphing for target platform {self.target.name}",
            f"datasource_list: [ {', '.join(self.target.datasources)} ]",
        ]
        keep_static = self.options.keep_static_ip and not self.options.skip_network
        if keep_static:
            body.append(
                "network: {config: disabled}  # static addresses were kept; cloud-init must not replace them"
            )
        self.editor.write(
            CLOUD_CFG,
            "\n".join(body) + "\n",
            f"cloud-init datasource {', '.join(self.target.datasources)}"
            + ("; network config disabled (keep_static_ip)" if keep_static else ""),
        )
        if self.guest.exists("/etc/cloud/cloud-init.disabled"):
            self.editor.delete("/etc/cloud/cloud-init.disabled", "it kept cloud-init from running")
        self.editor.run(["systemctl", "enable", *CLOUD_INIT_UNITS], "enable cloud-init at boot", check=False)

    # -- drivers -----------------------------------------------------------------------------------
    def available_drivers(self) -> list[str]:
        """Target drivers that exist as modules in at least one installed kernel (built-ins need no entry).

        Without ``modules.dep`` (synthetic trees), every target driver is listed.
        """
        wanted = list(self.target.drivers)
        seen_dep = False
        modules: set[str] = set()
        builtin: set[str] = set()
        for kernel in self.info.kernels:
            for name, into in (("modules.dep", modules), ("modules.builtin", builtin)):
                path = f"/lib/modules/{kernel}/{name}"
                if not self.guest.is_file(path):
                    continue
                seen_dep = seen_dep or name == "modules.dep"
                for line in self.guest.read_text(path).splitlines():
                    first = line.split(":", 1)[0].strip()
                    base = first.rsplit("/", 1)[-1].split(".ko", 1)[0]
                    if base:
                        into.add(base.replace("-", "_"))
        if not seen_dep:
            return wanted
        missing = [d for d in wanted if d not in modules and d not in builtin]
        if missing:
            self.editor.warn(
                f"kernel(s) {', '.join(self.info.kernels)} lack driver(s) {', '.join(missing)} "
                f"for {self.target.name}"
            )
        return [d for d in wanted if d in modules]

    def regenerate_bootloader(self) -> None:
        if not self.guest.is_file(GRUB_DEFAULT):
            return
        for argv in self.bootloader_commands():
            self.editor.run(argv, "regenerate the GRUB configuration (UUIDs, serial console, kernel args)")
