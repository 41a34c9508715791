"""What each target platform needs from a Linux guest, and which agents belong to which platform."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Platform:
    """Drivers the initramfs must hold to boot there, cloud-init's datasources, the platform's own agents."""

    name: str
    drivers: tuple[str, ...]
    datasources: tuple[str, ...]
    agents: tuple[str, ...]
    #: MTU written into the DHCP interface configs (GCE's VPC default is 1460, not 1500)
    mtu: int | None = None


PLATFORMS: dict[str, Platform] = {
    "kvm": Platform(
        "kvm",
        ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net"),
        ("ConfigDrive", "OpenStack", "NoCloud", "None"),
        ("qemu-guest-agent",),
    ),
    "aws": Platform("aws", ("nvme", "ena", "xen_blkfront", "xen_netfront"), ("Ec2", "None"), ()),
    "azure": Platform(
        "azure",
        ("hv_vmbus", "hv_storvsc", "hv_netvsc", "hv_utils"),
        ("Azure", "None"),
        ("waagent", "hyperv-daemons"),
    ),
    "gcp": Platform(
        "gcp",
        ("virtio_pci", "virtio_scsi", "virtio_net", "gve", "nvme"),
        ("GCE", "None"),
        ("google-guest-agent",),
        mtu=1460,
    ),
}

#: agents that tie a guest to a *source* platform (removed when leaving it)
SOURCE_AGENTS: dict[str, tuple[str, ...]] = {
    "vmware": ("open-vm-tools",),
    "vmware_vsphere": ("open-vm-tools",),
    "hyperv": ("hyperv-daemons",),
    "azure": ("waagent", "hyperv-daemons"),
    "gcp": ("google-guest-agent",),
    "kvm": ("qemu-guest-agent",),
    "openstack": ("qemu-guest-agent",),
    "local": (),
    "aws": (),
}


def platform(name: str) -> Platform:
    """The target platform profile; raises ``UnsupportedOS``-free ``ValueError`` for unknown names."""
    try:
        return PLATFORMS[name]
    except KeyError:
        raise ValueError(f"unknown target platform {name!r}; expected one of {sorted(PLATFORMS)}") from None


def agents_to_remove(installed: list[str], source_platform: str | None, target: str) -> list[str]:
    """Installed platform agents that do not belong on ``target``.

    With a known source, only that platform's agents go; without one, every other platform's agent does.
    cloud-init is never removed: it configures the instance on every target.
    """
    keep = set(PLATFORMS[target].agents) | {"cloud-init"}
    if source_platform is not None:
        candidates = set(SOURCE_AGENTS.get(source_platform, ()))
    else:
        candidates = {a for agents in SOURCE_AGENTS.values() for a in agents}
    return [a for a in installed if a in candidates and a not in keep]
