"""The image-level API: ``inspect_image`` and ``morph_image`` on real disk images (libguestfs)."""

from __future__ import annotations

from collections.abc import Callable

from osmorphing.detect import inspect_guest
from osmorphing.editor import GuestEditor
from osmorphing.errors import UnsupportedOS
from osmorphing.guest import Guest
from osmorphing.libguestfs_guest import ImageSession, LibguestfsGuest
from osmorphing.models import Change, MorphOptions, MorphReport, OsInfo
from osmorphing.morph import check_supported, describe, morph_guest
from osmorphing.scripts import PRE_MOUNT, for_phase, scripts_for
from osmorphing.winconvert import convert_windows
from osmorphing.winsources import WindowsSources


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
    windows_sources: WindowsSources | None = None,
    windows_target: str | None = None,
) -> MorphReport:
    """Make the OS on ``disk_path`` boot and get its network on ``target_platform``; modifies it in place.

    Synchronous (minutes under TCG); ``on_event`` receives one human line per step and per change.
    Raises ``osmorphing.errors.MorphingError`` subclasses: ``InspectionError`` (no OS found),
    ``UnsupportedOS`` (named cause), ``GuestCommandError`` (a command in the guest failed).
    Windows guests are converted for ``windows_target`` (default ``target_platform``; ``openstack``
    differs from ``kvm`` by its metadata service) from ``windows_sources`` (drivers, cloudbase-init).
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
            return morph_windows(guest, hints, windows_target or target_platform, source_platform, options,
                                 windows_sources or WindowsSources(), emit)
        else:
            # A look, read-only, before anything is written: a disk with no OS to adapt (a data disk)
            # or an unsupported one must leave the appliance as it came. A read-write mount alone
            # changes an ext4 superblock (mount count, times) and replays its journal.
            session.mount(root, read_only=True)  # what it cannot mount, the read-write mount reports
            check_supported(inspect_guest(guest, hints), target_platform)
            session.unmount()
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


def morph_windows(
    guest: LibguestfsGuest | Guest,
    hints: dict[str, object],
    target: str,
    source_platform: str | None,
    options: MorphOptions,
    sources: WindowsSources,
    emit: Callable[[str], None],
) -> MorphReport:
    """Convert the mounted Windows guest for ``target``; also what tests and operators call directly."""
    editor = GuestEditor(guest, emit)
    info = inspect_guest(guest, dict(hints))
    editor.event(describe(info))
    if info.os_type != "windows":
        raise UnsupportedOS(f"not a Windows guest: {describe(info)}")
    convert_windows(editor, info, target, options, sources, source_platform)
    editor.event(f"OS morphing for {target} done: {len(editor.changes)} change(s), "
                 f"{len(editor.warnings)} warning(s)")
    return MorphReport(os_info=info, target_platform=target, source_platform=source_platform,
                       changes=editor.changes, warnings=editor.warnings)
