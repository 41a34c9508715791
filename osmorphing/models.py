"""Serialisable data of OS morphing: what was found in the guest, what was asked, what was changed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

TargetPlatform = Literal["kvm", "aws", "azure", "gcp"]
TARGET_PLATFORMS: tuple[str, ...] = ("kvm", "aws", "azure", "gcp")

#: agents Sterna recognises, by the name used in ``OsInfo.agents``
AGENTS = (
    "open-vm-tools",
    "hyperv-daemons",
    "waagent",
    "cloud-init",
    "google-guest-agent",
    "qemu-guest-agent",
)


class NetworkInterface(BaseModel):
    """One interface as configured in the guest's network configuration."""

    name: str
    style: str
    mode: Literal["dhcp", "static", "other"] = "other"
    mac_address: str | None = None
    addresses: list[str] = Field(default_factory=list)
    gateway: str | None = None
    source: str = ""


class OsInfo(BaseModel):
    """What inspection found in the guest."""

    os_type: Literal["linux", "windows", "unknown"] = "unknown"
    family: str = "unknown"  # "debian", "redhat", "suse", "windows"
    distribution: str = "unknown"  # os-release ID: "debian", "ubuntu", "rhel", "centos", "rocky", ...
    version: str = ""
    friendly_name: str = ""
    architecture: str = "unknown"
    firmware: Literal["bios", "uefi", "unknown"] = "unknown"
    root_filesystem: str | None = None
    boot_filesystem: str | None = None
    bootloader: str | None = None  # "grub2", "grub-legacy", "systemd-boot", "windows-bootmgr"
    kernels: list[str] = Field(default_factory=list)
    initramfs_tool: str | None = None  # "initramfs-tools", "dracut", "mkinitrd"
    agents: list[str] = Field(default_factory=list)
    network_styles: list[str] = Field(default_factory=list)
    interfaces: list[NetworkInterface] = Field(default_factory=list)
    package_format: str | None = None  # "deb", "rpm"
    # Windows only
    windows_edition: str | None = None
    windows_product_name: str | None = None
    windows_build: str | None = None
    windows_installation_type: str | None = None


ChangeAction = Literal["created", "modified", "deleted", "command"]


class Change(BaseModel):
    """One change made to the guest (a file, or a command run inside it)."""

    path: str
    action: ChangeAction
    detail: str

    def line(self) -> str:
        """One human line, as shown in the OS_MORPHING task's events."""
        if self.action == "command":
            return f"ran in guest: {self.path} ({self.detail})"
        return f"{self.action} {self.path}: {self.detail}"


class TargetNic(BaseModel):
    """A NIC of the target instance (from the network map)."""

    mac_address: str | None = None
    network_name: str | None = None


class MorphOptions(BaseModel):
    """What the caller asks of OS morphing.

    ``keep_static_ip``: keep each interface's static addresses, moved to its new name (the *n*-th
    configured interface becomes ``eth<n>``), instead of replacing them with DHCP.
    ``user_scripts``: Coriolis ``user_scripts`` (``{"global": {"linux": ...}, "instances": {...}}``);
    phases ``osmorphing_pre_os_mount`` (run in the libguestfs appliance before the guest filesystems
    are mounted, the role Coriolis' minion plays) and ``osmorphing_post_os_mount`` (run chrooted in the
    guest; the default phase). ``instance_name`` selects the per-instance scripts.
    ``nics``: the target's NICs; their count sets how many ``ethN`` get a DHCP config, and their MACs
    (when given) are written where the guest pins names to MACs.
    ``remove_source_tools``: uninstall the source platform's agents (default true).
    ``skip_network``: leave the guest's network alone (``destination_environment.skip_os_morphing_network``):
    no interface configuration written or retired, MAC pins kept, and no interface-naming arguments
    (``net.ifnames``, ``biosdevname``) added to or removed from the kernel command line. On Windows, no
    static address is re-applied at first boot. Every other step runs.
    """

    keep_static_ip: bool = False
    user_scripts: dict[str, Any] | None = None
    instance_name: str | None = None
    nics: list[TargetNic] = Field(default_factory=list)
    remove_source_tools: bool = True
    skip_network: bool = False
    serial_console: str = "ttyS0,115200n8"


class MorphReport(BaseModel):
    """Result of ``morph_image``: what the guest is, and every change made to it."""

    os_info: OsInfo
    target_platform: str
    source_platform: str | None = None
    changes: list[Change] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    def changed_paths(self) -> set[str]:
        """Paths of files created, modified or deleted (commands excluded)."""
        return {c.path for c in self.changes if c.action != "command"}
