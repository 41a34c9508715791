"""The image-level API: ``inspect_image`` and ``morph_image`` on real disk images (libguestfs)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

from osmorphing.detect import inspect_guest
from osmorphing.errors import GuestCommandError, UnsupportedOS
from osmorphing.libguestfs_guest import ImageSession, LibguestfsGuest
from osmorphing.models import Change, MorphOptions, MorphReport, OsInfo
from osmorphing.morph import check_supported, describe, morph_guest
from osmorphing.scripts import PRE_MOUNT, for_phase, scripts_for
from osmorphing.windows import windows_conversion_plan


def inspect_image(disk_path: str, fmt: str) -> OsInfo:
    """Inspect the OS on a disk image, read-only. Raises ``InspectionError`` when there is none."""
    with ImageSession(disk_path, fmt, readonly=True) as session:
        root = session.roots()[0]
        session.mount(root)
        return inspect_guest(LibguestfsGuest(session), session.hints(root))


def morph_image(
    disk_path: str,
    fmt: str,
    *,
    target_platform: str,
    source_platform: str | None,
    options: MorphOptions,
    on_event: Callable[[str], None] | None = None,
) -> MorphReport:
    """Make the OS on ``disk_path`` boot and get its network on ``target_platform``; modifies it in place.

    Synchronous (minutes under TCG); ``on_event`` receives one human line per step and per change.
    Raises ``osmorphing.errors.MorphingError`` subclasses: ``InspectionError`` (no OS found),
    ``UnsupportedOS`` (named cause), ``GuestCommandError`` (a command in the guest failed).
    """
    emit = on_event or (lambda _line: None)
    if fmt == "vmdk":
        emit("note: VMDK images may be read-only to QEMU (streamOptimized); convert to raw/qcow2 first")
    emit(f"inspecting {disk_path} ({fmt}) with libguestfs")
    with ImageSession(disk_path, fmt, readonly=False) as session:
        roots = session.roots()
        if len(roots) > 1:
            raise UnsupportedOS(
                f"{len(roots)} operating systems found on one disk ({', '.join(roots)}); "
                "multi-boot guests are not supported"
            )
        root = roots[0]
        hints = session.hints(root)
        guest = LibguestfsGuest(session)
        if hints.get("type") == "windows":
            session.mount(root)
            info = inspect_guest(guest, hints)
            emit(describe(info))
        else:
            pre_scripts = for_phase(
                scripts_for(options.user_scripts, "linux", options.instance_name), PRE_MOUNT
            )
            pre_changes: list[Change] = []
            for payload, origin in pre_scripts:
                output = session.appliance_sh(payload)
                change = Change(
                    path=f"user script {origin}",
                    action="command",
                    detail=f"phase {PRE_MOUNT}, in the appliance, guest not mounted; output: "
                    + " | ".join(output.strip().splitlines()[-3:]),
                )
                pre_changes.append(change)
                emit(change.line())
            for problem in session.mount(root):
                emit(f"warning: not mounted: {problem}")
            report = morph_guest(
                guest,
                target_platform=target_platform,
                source_platform=source_platform,
                options=options,
                on_event=on_event,
                hints=hints,
                run_pre_mount_scripts=False,
            )
            report.changes[:0] = pre_changes
            return report
    return _convert_windows(disk_path, fmt, info, target_platform, emit)


def _convert_windows(
    disk_path: str, fmt: str, info: OsInfo, target_platform: str, emit: Callable[[str], None]
) -> MorphReport:
    check_supported(info, target_platform)
    plan = windows_conversion_plan(info, target_platform)
    for step in plan["steps"]:
        emit(f"plan: {step}")
    if plan["missing"]:
        raise UnsupportedOS(
            f"{info.friendly_name or 'Windows'} detected, but converting it on this host needs: "
            + "; ".join(plan["missing"])
        )
    converter = plan["converter"] or shutil.which("virt-v2v-in-place") or "virt-v2v-in-place"
    argv = [converter, "-i", "disk", "-if", fmt, disk_path]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GuestCommandError(argv, proc.stdout + proc.stderr)
    change = Change(
        path=" ".join(argv),
        action="command",
        detail="virt-v2v in-place conversion: virtio drivers, firstboot scripts",
    )
    emit(change.line())
    return MorphReport(os_info=info, target_platform=target_platform, changes=[change])
