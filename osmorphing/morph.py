"""Morphing a guest: inspect it, then apply its family's changes for the target platform."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from osmorphing.detect import inspect_guest
from osmorphing.editor import GuestEditor
from osmorphing.errors import InspectionError, UnsupportedOS
from osmorphing.guest import Guest
from osmorphing.linux.families import FAMILY_MORPHERS
from osmorphing.models import TARGET_PLATFORMS, MorphOptions, MorphReport, OsInfo
from osmorphing.platforms import platform
from osmorphing.scripts import FIRST_BOOT, POST_MOUNT, PRE_MOUNT, for_phase, scripts_for

#: oldest release Sterna morphs, per distribution (os-release ID)
MINIMUM_VERSIONS: dict[str, tuple[int, ...]] = {
    "debian": (8,),
    "ubuntu": (16, 4),
    "rhel": (7,),
    "centos": (7,),
    "rocky": (8,),
    "almalinux": (8,),
    "ol": (7,),
    "fedora": (30,),
    "amzn": (2,),
    "sles": (12,),
    "opensuse-leap": (15,),
}
SUPPORTED_ARCHES = ("x86_64", "aarch64")


def check_supported(info: OsInfo, target_platform: str) -> None:
    """Raise ``UnsupportedOS`` naming the reason when this guest cannot be morphed."""
    if target_platform not in TARGET_PLATFORMS:
        raise UnsupportedOS(
            f"unknown target platform {target_platform!r}; expected one of {TARGET_PLATFORMS}"
        )
    if info.os_type == "unknown":
        raise InspectionError(
            "no operating system found in the guest (no /etc/os-release, no Windows registry)"
        )
    if info.os_type == "windows":
        return
    name = f"{info.friendly_name or info.distribution} {info.version}".strip()
    if info.family not in FAMILY_MORPHERS:
        raise UnsupportedOS(
            f"Linux distribution {name!r} (ID {info.distribution!r}) is not supported; "
            "supported families: Debian/Ubuntu, RHEL/CentOS/Rocky/Fedora, SUSE/openSUSE"
        )
    minimum = MINIMUM_VERSIONS.get(info.distribution)
    found = tuple(int(x) for x in re.findall(r"\d+", info.version)[:2])
    if minimum and found and found < minimum:
        raise UnsupportedOS(
            f"{name} is older than the oldest supported {info.distribution} ({'.'.join(map(str, minimum))})"
        )
    if info.architecture == "unknown" and not info.kernels:
        # A tree with an os-release but no kernel and no program to tell its architecture by (a data
        # disk, a container's root): nothing boots from it, so there is nothing to adapt.
        raise InspectionError(f"{name}: no kernel and no program to tell the architecture by: not a bootable OS")
    if info.architecture not in SUPPORTED_ARCHES:
        raise UnsupportedOS(
            f"{name}: architecture {info.architecture!r} is not supported ({SUPPORTED_ARCHES})"
        )


def describe(info: OsInfo) -> str:
    """One line summarising the inspection, for the task events."""
    if info.os_type == "windows":
        return (
            f"detected {info.friendly_name or 'Windows'} (version {info.version}, "
            f"build {info.windows_build}, "
            f"edition {info.windows_edition}, {info.windows_installation_type}, {info.architecture})"
        )
    return (
        f"detected {info.friendly_name or info.distribution} (family {info.family}, version {info.version}, "
        f"{info.architecture}, firmware {info.firmware}, bootloader {info.bootloader}, "
        f"initramfs {info.initramfs_tool}, kernels {' '.join(info.kernels) or 'none'}; "
        f"agents: {', '.join(info.agents) or 'none'}; network: {', '.join(info.network_styles) or 'none'})"
    )


def morph_guest(
    guest: Guest,
    *,
    target_platform: str,
    source_platform: str | None,
    options: MorphOptions,
    on_event: Callable[[str], None] | None = None,
    hints: dict[str, Any] | None = None,
    run_pre_mount_scripts: bool = True,
) -> MorphReport:
    """Morph a mounted Linux guest (a ``DirectoryGuest`` or a libguestfs-backed one) in place."""
    editor = GuestEditor(guest, on_event)
    scripts = scripts_for(options.user_scripts, "linux", options.instance_name)
    if run_pre_mount_scripts:
        for payload, origin in for_phase(scripts, PRE_MOUNT):
            editor.run_user_script(payload, origin, PRE_MOUNT, in_appliance=True)
    info = inspect_guest(guest, hints)
    editor.event(describe(info))
    check_supported(info, target_platform)
    if info.os_type == "windows":
        raise UnsupportedOS(
            f"{info.friendly_name or 'Windows'} must be converted from its disk image "
            "(morph_image), not from a directory tree"
        )
    for payload, origin in for_phase(scripts, POST_MOUNT):
        editor.run_user_script(payload, origin, POST_MOUNT)
    if for_phase(scripts, FIRST_BOOT):
        editor.warn(f"{FIRST_BOOT} user scripts are not run by OS morphing")
    morpher = FAMILY_MORPHERS[info.family](editor, info, platform(target_platform), source_platform, options)
    morpher.morph()
    editor.event(
        f"OS morphing for {target_platform} done: {len(editor.changes)} change(s), "
        f"{len(editor.warnings)} warning(s)"
    )
    return MorphReport(
        os_info=info,
        target_platform=target_platform,
        source_platform=source_platform,
        changes=editor.changes,
        warnings=editor.warnings,
    )
