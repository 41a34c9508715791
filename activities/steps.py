"""The per-instance migration steps, in the order ``workflows/instance.py`` runs them.

validate -> snapshot -> export -> OS morphing -> convert -> upload -> boot -> cleanup.
Steps after ``snapshot`` run on the host that holds the scratch copy (worker-specific queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio import activity

from activities import names
from activities.recording import TaskRecorder, heartbeating, task_running
from activities.services import Services
from activities.slots import source_slot
from core.errors import BootFailed, BootInconclusive
from core.limits import bandwidth_limit
from core.models import DeployedInstance, DiskLocator, SourceSnapshot
from providers.base import BootVerifier, ExportProvider, ImportProvider, TransferContext
from workflows.types import (
    CleanupInput,
    DeployInput,
    DiskStepInput,
    DiskStepResult,
    Heartbeat,
    MorphInput,
    MorphResult,
    SnapshotResult,
    StepInput,
    UploadResult,
    ValidateResult,
)

if TYPE_CHECKING:
    from diskio.copier import CopyResult


def _previous_heartbeat() -> Heartbeat | None:
    """The last heartbeat of the previous attempt of this activity, if any.

    Heartbeat details come back as plain dicts (no type hints on that path), hence the validate.
    """
    details = activity.info().heartbeat_details
    if not details:
        return None
    return Heartbeat.model_validate(details[0])


def _previous_checkpoint() -> list[tuple[int, int]] | None:
    """Done ``(offset, length)`` ranges heartbeated by the previous attempt, if any."""
    beat = _previous_heartbeat()
    return [(int(a), int(b)) for a, b in beat.checkpoint] or None if beat else None


def _dest_env(step: StepInput) -> dict[str, Any]:
    env = dict(step.destination_environment)
    env["migration_id"] = step.task.migration_id
    if step.export_info is not None:
        env.setdefault("instance_name", step.export_info.name)
    return env


class MigrationActivities:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _source(self, step: StepInput) -> ExportProvider:
        return await self.services.provider(step.origin_endpoint_id, ExportProvider, step.task.migration_id)

    async def _destination(self, step: StepInput) -> ImportProvider:
        return await self.services.provider(step.destination_endpoint_id, ImportProvider, step.task.migration_id)

    @activity.defn(name=names.VALIDATE_INSTANCE)
    async def validate(self, inp: StepInput) -> ValidateResult:
        async with task_running(self.services, inp.task) as rec:
            source = await self._source(inp)
            export_info = await asyncio.to_thread(source.validate_source, inp.source_environment, inp.task.instance)
            await rec.aevent(
                f"Source instance '{export_info.name}': {export_info.num_cpu} vCPU, {export_info.memory_mb} MiB, "
                f"{len(export_info.devices.disks)} disk(s), {len(export_info.devices.nics)} NIC(s), "
                f"firmware {export_info.firmware_type}"
            )
            dest = await self._destination(inp)
            env = _dest_env(inp.model_copy(update={"export_info": export_info}))
            await asyncio.to_thread(dest.validate_destination, env, export_info)
            if not inp.skip_os_morphing:
                from activities.morphing import check_windows_sources

                check_windows_sources(self.services.settings, dest, export_info)
            await asyncio.to_thread(
                self.services.store.set_instance_info, inp.task.migration_id, inp.task.instance,
                "export_info", export_info.model_dump(mode="json"),
            )
            await rec.aevent("Source and destination inputs are valid")
            return ValidateResult(export_info=export_info)

    @activity.defn(name=names.SNAPSHOT_INSTANCE)
    async def snapshot(self, inp: StepInput) -> SnapshotResult:
        """Runs on the shared data queue; the host that picks it up owns the rest of the disk work."""
        async with task_running(self.services, inp.task) as rec, heartbeating():
            source = await self._source(inp)
            workdir = self.services.settings.scratch / inp.task.migration_id / _safe(inp.task.instance)
            workdir.mkdir(parents=True, exist_ok=True)
            snap: SourceSnapshot | None = None
            making: asyncio.Future[SourceSnapshot] | None = None
            try:
                if inp.source_environment.get("shutdown_instances"):
                    await asyncio.to_thread(source.shutdown_instance, inp.source_environment, inp.task.instance)
                    await rec.aevent("Source instance shut down")
                # Shielded, so that a cancel leaves us the handle of the thread, which goes on.
                making = asyncio.ensure_future(asyncio.to_thread(
                    source.snapshot_instance, inp.source_environment, inp.task.instance, workdir))
                snap = await asyncio.shield(making)
                await rec.aevent(f"Snapshot {snap.snapshot_id} of {len(snap.disks)} disk(s) created "
                                 f"on host {self.services.settings.worker_host_id}")
                # Recorded so that a force-cancel (which skips the workflow's cleanup) can still clean up.
                for key, value in (("snapshot", snap.model_dump(mode="json")), ("workdir", str(workdir)),
                                   ("host_queue", self.services.settings.host_task_queue)):
                    await asyncio.to_thread(self.services.store.set_instance_info, inp.task.migration_id,
                                            inp.task.instance, key, value)
            except asyncio.CancelledError:
                # The workflow learns the scratch folder and the snapshot only from this step's result, so
                # its cleanup can't find what a cancelled snapshot made: remove it here (issue 11), and
                # again when the provider's thread ends (it may recreate the folder or finish a snapshot).
                await asyncio.shield(asyncio.to_thread(_discard, source, snap, workdir))
                if making is not None and not making.done():
                    making.add_done_callback(functools.partial(_discard_when_done, source, workdir))
                raise
            return SnapshotResult(snapshot=snap, host_queue=self.services.settings.host_task_queue,
                                  workdir=str(workdir))

    @activity.defn(name=names.EXPORT_DISK)
    async def export_disk(self, inp: DiskStepInput) -> DiskStepResult:
        step = inp.step
        assert step.snapshot is not None and step.workdir is not None
        async with task_running(self.services, step.task) as rec:
            source = await self._source(step)
            out = Path(step.workdir) / "export" / f"{_safe(inp.disk.disk_id)}.raw"
            out.parent.mkdir(parents=True, exist_ok=True)
            # A checkpoint is only worth something if the partial file it describes survived.
            beat = _previous_heartbeat() if out.exists() else None
            checkpoint = [(int(a), int(b)) for a, b in beat.checkpoint] if beat and beat.checkpoint else None
            async with source_slot(self.services, source, step.snapshot, rec, _previous_heartbeat()):
                result, size = await self._copy(inp, rec, source, out, beat, checkpoint)
            await rec.aevent(
                f"Exported {inp.disk.disk_id}: read {result.bytes_read} bytes, wrote {result.bytes_written}, "
                f"skipped {result.bytes_skipped_zero} zero bytes, resumed {result.chunks_resumed} chunk(s); "
                f"digest {result.digest}{' (verified)' if result.verified else ''}"
            )
            return DiskStepResult(
                disk=DiskLocator(disk_id=inp.disk.disk_id, size_bytes=size, format="raw", path=str(out)),
                bytes_read=result.bytes_read, bytes_written=result.bytes_written,
                resumed_bytes=beat.bytes_done if beat and checkpoint else 0,
            )

    async def _copy(self, inp: DiskStepInput, rec: TaskRecorder, source: ExportProvider, out: Path,
                    beat: Heartbeat | None, checkpoint: list[tuple[int, int]] | None) -> tuple[CopyResult, int]:
        from diskio.copier import copy_disk
        from diskio.local import LocalFileTarget

        step = inp.step
        assert step.snapshot is not None
        src = await asyncio.to_thread(source.open_disk, step.snapshot, inp.disk)
        dst = LocalFileTarget(out, src.size)
        try:
            allocated = sum(e.length for e in await asyncio.to_thread(src.extents))
            if beat and checkpoint:
                await rec.aevent(f"Resuming export of {inp.disk.disk_id} from its checkpoint: "
                                 f"{beat.bytes_done} of {allocated} bytes already copied")
            reporter = await rec.progress(f"Exporting disk {inp.disk.disk_id}", allocated,
                                          beat.bytes_done if beat and checkpoint else 0)
            limit = bandwidth_limit(step.source_environment, "source_environment")
            chunk_size, lanes = _pacing(limit)
            result = await copy_disk(
                src, dst, checkpoint=checkpoint, on_progress=reporter.transfer, bandwidth_limit=limit,
                chunk_size=chunk_size, lanes=lanes,
            )
        finally:
            await asyncio.to_thread(src.close)
            await asyncio.to_thread(dst.close)
        return result, src.size

    @activity.defn(name=names.OS_MORPHING)
    async def os_morphing(self, inp: MorphInput) -> MorphResult:
        async with task_running(self.services, inp.step.task) as rec:
            if inp.skip:
                await rec.aevent("OS morphing skipped: skip_os_morphing is set")
                return MorphResult(disks=inp.disks, bootable=False)
            dest = await self._destination(inp.step)
            from activities.morphing import morph_disks

            return await morph_disks(inp, dest, inp.origin_type, rec)

    @activity.defn(name=names.CONVERT_DISK)
    async def convert_disk(self, inp: DiskStepInput) -> DiskLocator:
        from diskio.convert import convert_image

        step = inp.step
        assert step.workdir is not None and inp.disk.path is not None
        async with task_running(self.services, step.task) as rec:
            dest = await self._destination(step)
            fmt = dest.TARGET_DISK_FORMAT
            if fmt == inp.disk.format and not inp.flatten:
                await rec.aevent(f"{inp.disk.disk_id} is already {fmt}: nothing to convert")
                return inp.disk
            out = Path(step.workdir) / "convert" / f"{_safe(inp.disk.disk_id)}.{fmt}"
            out.parent.mkdir(parents=True, exist_ok=True)
            converted = inp.disk.model_copy(update={"format": fmt, "path": str(out)})
            # The input stays until upload has taken the output over (a retry after a kill here reconverts);
            # only an attempt that already finished may find it gone, and its output then stands.
            if out.exists() and not Path(inp.disk.path).exists():
                await rec.aevent(f"{inp.disk.disk_id} was already converted to {fmt} by an earlier attempt")
                return converted
            partial = out.with_name(out.name + ".partial")
            reporter = await rec.progress(f"Converting disk {inp.disk.disk_id} to {fmt}", 10000)
            await convert_image(inp.disk.path, inp.disk.format, str(partial), fmt,
                                options=list(dest.TARGET_DISK_OPTIONS) or None, on_progress=reporter.percent)
            partial.replace(out)
            await rec.aevent(f"Converted {inp.disk.disk_id} from {inp.disk.format} to {fmt}")
            return converted

    @activity.defn(name=names.UPLOAD_DISK)
    async def upload_disk(self, inp: DiskStepInput) -> UploadResult:
        step = inp.step
        assert step.export_info is not None and step.workdir is not None
        async with task_running(self.services, step.task) as rec:
            dest = await self._destination(step)
            reporter = await rec.progress(f"Uploading disk {inp.disk.disk_id}", None)
            ctx = TransferContext(
                workdir=Path(step.workdir), progress=reporter.transfer, checkpoint=_previous_checkpoint(),
                bandwidth_limit=bandwidth_limit(step.destination_environment, "destination_environment"),
                event=rec.event,
            )
            imported = await dest.import_disk(_dest_env(step), step.export_info, inp.disk, ctx)
            # The destination holds the disk now: the raw export that convert read from can go.
            export = Path(step.workdir) / "export" / f"{_safe(inp.disk.disk_id)}.raw"
            if str(export) != inp.disk.path:
                await asyncio.to_thread(export.unlink, True)
            return UploadResult(disk=imported)

    @activity.defn(name=names.DEPLOY_INSTANCE)
    async def deploy(self, inp: DeployInput) -> dict[str, Any]:
        step = inp.step
        assert step.export_info is not None
        now: dict[str, Any] = {}
        async with task_running(self.services, step.task) as rec, heartbeating(details=lambda: dict(now)):
            dest = await self._destination(step)
            env = _dest_env(step)
            deployed = await asyncio.to_thread(dest.deploy_instance, env, step.export_info, inp.disks)
            await rec.aevent(f"Instance {deployed.name or deployed.id} deployed: "
                             + ", ".join(f"{k}={v}" for k, v in deployed.details.items() if k != "disks"))
            # By default the boot is checked when OS morphing found a bootable OS; the destination
            # environment's verify_boot forces it on or off.
            verify = env.get("verify_boot")
            if verify is None:
                verify = inp.bootable
            if not isinstance(dest, BootVerifier):
                await rec.aevent(f"The '{dest.PLUGIN_NAME}' destination can't check boots: not verified")
            elif not verify:
                await rec.aevent("Boot check disabled (verify_boot is false)" if env.get("verify_boot") is False
                                 else "Boot check not run: OS morphing found no bootable OS (set verify_boot "
                                 "to force it)")
            else:
                timeout = float(env.get("boot_timeout", 600))
                evidence = await _checked_boot(rec, dest, env, deployed, timeout, now)
                for line in evidence:
                    await rec.aevent(f"Boot check: {line}")
            await asyncio.to_thread(
                self.services.store.set_instance_info, step.task.migration_id, step.task.instance,
                "deployed", deployed.model_dump(mode="json"),
            )
            return deployed.model_dump(mode="json")

    @activity.defn(name=names.RELEASE_SNAPSHOT)
    async def release_snapshot(self, inp: StepInput) -> None:
        """Delete the source snapshot a lost host made; its scratch went with that host."""
        async with task_running(self.services, inp.task) as rec, heartbeating():
            if inp.snapshot is not None:
                source = await self._source(inp)
                await asyncio.to_thread(source.delete_snapshot, inp.snapshot)
                await rec.aevent(f"Source snapshot {inp.snapshot.snapshot_id} of the lost host removed")

    @activity.defn(name=names.CLEANUP_INSTANCE)
    async def cleanup(self, inp: CleanupInput) -> None:
        """Always runs (success, error, cancel); every part tolerates partial state."""
        step = inp.step
        async with task_running(self.services, step.task) as rec, heartbeating():
            try:
                if step.snapshot is not None:
                    source = await self._source(step)
                    await asyncio.to_thread(source.delete_snapshot, step.snapshot)
                    await rec.aevent(f"Source snapshot {step.snapshot.snapshot_id} removed")
                dest = await self._destination(step)
                removed = await asyncio.to_thread(
                    dest.cleanup, _dest_env(step), step.task.instance, inp.disks, inp.deployed, inp.succeeded
                )
                for line in removed:
                    await rec.aevent(line)
            finally:
                # Scratch is ours, not a provider's: it goes even when an endpoint can no longer be used
                # (e.g. its path is now outside STERNA_LOCAL_ROOTS).
                if step.workdir:
                    await asyncio.to_thread(shutil.rmtree, step.workdir, True)
                    await rec.aevent(f"Scratch space {step.workdir} removed")
                    await asyncio.to_thread(_remove_if_empty, Path(step.workdir).parent)


async def _checked_boot(rec: TaskRecorder, dest: BootVerifier, env: Mapping[str, Any], deployed: DeployedInstance,
                        timeout: float, now: dict[str, Any]) -> list[str]:
    """Run the destination's boot check; each stage it sees becomes an event and a progress update.

    A check with no verdict (``BootInconclusive``) gets one more attempt, not the step's usual three:
    a second timeout on the same disk says what a third would.
    """
    store = rec.services.store

    def stage(line: str) -> None:  # called from the check's thread
        now["boot_stage"] = line
        rec.event(f"Boot check: {line}")
        store.start_progress(rec.task_id, f"Boot check: {line.split(' (', 1)[0]}", None)

    await asyncio.to_thread(store.start_progress, rec.task_id, "Boot check: powering on", None)
    try:
        return await asyncio.to_thread(dest.verify_boot, env, deployed, timeout, stage)
    except BootInconclusive as exc:
        raise retry_once(exc, activity.info().attempt) from exc


def retry_once(exc: BootInconclusive, attempt: int) -> BootInconclusive | BootFailed:
    """The error an inconclusive boot check ends its attempt with: retryable on the first attempt only."""
    if attempt >= 2:
        return BootFailed(f"{exc.message} (attempt {attempt}: not retried again)")
    return exc


def _discard(source: ExportProvider, snapshot: SourceSnapshot | None, workdir: Path) -> None:
    """What a cancelled snapshot step made: the source snapshot, the scratch space (and the migration's
    folder if it is left empty)."""
    if snapshot is not None:
        with contextlib.suppress(Exception):  # best effort: the step ends cancelled either way
            source.delete_snapshot(snapshot)
    shutil.rmtree(workdir, ignore_errors=True)
    _remove_if_empty(workdir.parent)


def _discard_when_done(source: ExportProvider, workdir: Path, made: asyncio.Future[SourceSnapshot]) -> None:
    """Done-callback of a cancelled snapshot's thread: what it made after the cancel goes too."""
    snapshot = None if made.cancelled() or made.exception() is not None else made.result()
    asyncio.get_running_loop().run_in_executor(None, _discard, source, snapshot, workdir)


def _remove_if_empty(folder: Path) -> None:
    """The migration's scratch folder, once its last instance is cleaned up (others may still be running)."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _pacing(limit: int | None) -> tuple[int, int]:
    """Under a bandwidth cap, chunks small enough that one completes (and heartbeats) every ~0.25 s.

    Cancellation reaches an activity only through heartbeats, and a heartbeat is sent when a
    chunk completes: a 4 MiB/s cap on 8 MiB chunks would go silent past the heartbeat timeout.
    """
    from diskio.copier import DEFAULT_CHUNK_SIZE, DEFAULT_LANES

    if not limit:
        return DEFAULT_CHUNK_SIZE, DEFAULT_LANES
    return max(64 * 1024, min(DEFAULT_CHUNK_SIZE, limit // 4) // 65536 * 65536), 2
