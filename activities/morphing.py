"""OS morphing step: adapts the guest on the exported boot disk for the destination platform.

libguestfs work is blocking and takes minutes under TCG, so it runs in a thread while this
coroutine heartbeats; a cancel waits for the thread (the disk must not be left half-written
while cleanup removes it) and then stops the step.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from activities.task_recorder import TaskRecorder
from core.errors import InvalidInput
from core.models import InstanceInfo
from core.morph_options import keep_static_ip, skip_network
from core.settings import Settings
from providers.base import ImportProvider
from workflows.types import MorphInput, MorphResult

if TYPE_CHECKING:
    from osmorphing.winsources import WindowsSources

#: endpoint type -> the platform whose tools the guest carries
SOURCE_PLATFORMS = {"vmware_vsphere": "vmware", "ova": "vmware", "aws": "aws", "openstack": "kvm",
                    "azure": "azure", "gcp": "gcp", "hyper-v": "hyperv", "scvmm": "hyperv"}


def source_platform(origin_type: str, info: InstanceInfo | None) -> str | None:
    if origin_type in SOURCE_PLATFORMS:
        return SOURCE_PLATFORMS[origin_type]
    # A local inventory remembers where its VMs came from only through their guest ids.
    if info is not None and (info.guest_id or "").endswith("Guest"):
        return "vmware"
    return None


def windows_sources(settings: Settings) -> WindowsSources:
    """The Windows drivers and agent this worker host has (settings, then the conventional places)."""
    from osmorphing.winsources import WindowsSources

    return WindowsSources.locate(settings.virtio_win, settings.cloudbase_init_msi, settings.aws_windows_drivers,
                                 settings.data_dir)


def windows_target(dest: type[ImportProvider] | ImportProvider) -> str:
    return dest.WINDOWS_TARGET or dest.TARGET_PLATFORM


def check_windows_sources(settings: Settings, dest: ImportProvider, info: InstanceInfo) -> None:
    """Fail validation when a Windows guest's target needs drivers or an agent this host lacks."""
    if info.os_type != "windows":
        return
    target = windows_target(dest)
    problems = windows_sources(settings).missing(target)
    if problems:
        raise InvalidInput(f"Windows instance '{info.name}' cannot be converted for {target} on worker host "
                           f"{settings.worker_host_id}: " + "; ".join(problems))


async def morph_disks(inp: MorphInput, dest: ImportProvider, origin_type: str, rec: TaskRecorder) -> MorphResult:
    from osmorphing import MorphOptions, morph_image
    from osmorphing.editor import WARNING_PREFIX
    from osmorphing.errors import InspectionError
    from osmorphing.models import TargetNic

    boot = inp.disks[0] if inp.disks else None
    if boot is None or boot.path is None:
        return MorphResult(disks=inp.disks, bootable=False)
    boot_path = boot.path
    info = inp.step.export_info
    env = inp.step.destination_environment
    options = MorphOptions(
        keep_static_ip=keep_static_ip(env),
        skip_network=skip_network(env),
        user_scripts=inp.user_scripts or None,
        instance_name=inp.step.task.instance,
        nics=[TargetNic(network_name=nic.network_name) for nic in (info.devices.nics if info else [])],
    )
    target_platform = dest.TARGET_PLATFORM
    src_platform = source_platform(origin_type, info)
    await rec.aevent(f"Adapting {boot.disk_id} for '{target_platform}' (source platform: {src_platform or 'unknown'})")
    current = {"phase": "os_morphing", "substep": "starting the appliance and inspecting the guest"}
    rec.details = current  # what the heartbeats carry: ``temporal workflow describe`` shows the sub-step

    def substep(message: str) -> None:
        """Each morph event is also the step's current sub-step: a Coriolis progress update (what
        ``--watch`` shows under its bar) and the heartbeat's details. Called from the morph's thread."""
        if message.startswith(WARNING_PREFIX):  # the level says it: the event keeps the warning's own text
            rec.event(message.removeprefix(WARNING_PREFIX), "WARNING")
        else:
            rec.event(message)
        current["substep"] = message
        rec.services.store.start_progress(rec.task_id, f"OS morphing: {_short(message)}", None)

    await asyncio.to_thread(rec.services.store.start_progress, rec.task_id,
                            f"OS morphing: {current['substep']}", None)
    work = asyncio.ensure_future(asyncio.to_thread(
        morph_image, boot_path, boot.format, target_platform=target_platform, source_platform=src_platform,
        options=options, on_event=substep, windows_sources=windows_sources(rec.services.settings),
        windows_target=windows_target(dest),
    ))
    try:
        report = await asyncio.shield(work)
    except asyncio.CancelledError:
        rec.details = {"phase": "os_morphing", "cancelling": True}
        await asyncio.shield(_settle(work))
        raise
    except InspectionError as exc:
        # A data disk or an OS libguestfs does not recognise: copied unchanged, and said so.
        await rec.aevent(f"No operating system to adapt on {boot.disk_id}: {exc}; the disk is migrated "
                         "unchanged", "WARNING")
        return MorphResult(disks=inp.disks, bootable=False)
    await rec.aevent(f"OS morphing done: {len(report.changes)} change(s) to the guest")
    os_info: dict[str, Any] = report.os_info.model_dump(mode="json")
    await asyncio.to_thread(rec.services.store.set_instance_info, rec.task.migration_id, rec.task.instance,
                            "os_info", os_info)
    return MorphResult(disks=inp.disks, bootable=bool(report.os_info.kernels) or report.os_info.os_type == "windows")


def _short(message: str, limit: int = 100) -> str:
    first = message.splitlines()[0] if message else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


async def _settle(work: asyncio.Future[Any]) -> None:
    """Wait for the libguestfs thread after a cancel (``task_running`` heartbeats meanwhile).

    Returning before it would let the cleanup touch a disk libguestfs still holds; a silent wait
    would let the heartbeat timeout fail the activity (the task would end ERROR under a CANCELED
    execution). The cancel is what the caller reports; the thread's own outcome no longer matters.
    """
    with contextlib.suppress(Exception):
        await work
