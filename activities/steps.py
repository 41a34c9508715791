"""The per-instance migration steps, in the order ``workflows/instance.py`` runs them.

validate -> snapshot -> export -> OS morphing -> convert -> upload -> boot -> cleanup.
Steps after ``snapshot`` run on the host that holds the scratch copy (worker-specific queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from temporalio import activity

from activities import names
from activities.checkpoints import checkpoint_file, resume_ranges
from activities.context import dest_env, shutdown_requested, source_env, step_context
from activities.running import stop_others
from activities.services import Services
from activities.slots import source_slot
from activities.task_recorder import TaskRecorder, task_running
from core.children import kill_children_using
from core.errors import BootFailed, BootInconclusive
from core.limits import bandwidth_limit
from core.models import DeployedInstance, DiskLocator, SourceSnapshot
from core.tasks import OS_MORPHING_SKIPPED
from diskio.keepalive import in_thread
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
    TaskRef,
    UploadResult,
    ValidateResult,
)

if TYPE_CHECKING:
    from diskio.checkpoint import CheckpointFile
    from diskio.copier import CopyResult

T = TypeVar("T")


def previous_heartbeat() -> Heartbeat | None:
    """The last heartbeat of the previous attempt of this activity, if any.

    Heartbeat details come back as plain dicts (no type hints on that path), hence the validate.
    """
    details = activity.info().heartbeat_details
    if not details:
        return None
    return Heartbeat.model_validate(details[0])




#: the event of a cancel that arrives while the destination is making the instance
DEPLOY_CANCEL_WAITS = ("Cancellation requested while the instance is being deployed: waiting for that call to "
                       "return, so that the cleanup finds and removes what it made")


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
            export_info = await asyncio.to_thread(source.validate_source, source_env(inp), inp.task.instance)
            await rec.aevent(
                f"Source instance '{export_info.name}': {export_info.num_cpu} vCPU, {export_info.memory_mb} MiB, "
                f"{len(export_info.devices.disks)} disk(s), {len(export_info.devices.nics)} NIC(s), "
                f"firmware {export_info.firmware_type}"
            )
            dest = await self._destination(inp)
            action = await step_context(self.services, inp.model_copy(update={"export_info": export_info}))
            await asyncio.to_thread(dest.validate_destination, dest_env(inp), export_info, action)
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
        async with task_running(self.services, inp.task) as rec:
            source = await self._source(inp)
            workdir = scratch_dir(self.services.settings.scratch, inp.task)
            host_queue = self.services.settings.host_task_queue
            # Recorded before anything is written, so that a force-cancel (which skips the workflow's
            # cleanup) finds a partial copy too.
            for key, value in (("workdir", str(workdir)), ("host_queue", host_queue)):
                await asyncio.to_thread(self.services.store.set_instance_info, inp.task.migration_id,
                                        inp.task.instance, key, value)
            workdir.mkdir(parents=True, exist_ok=True)
            env, action = source_env(inp), await step_context(self.services, inp)
            if shutdown_requested(inp):
                await asyncio.to_thread(source.shutdown_instance, env, inp.task.instance)
                await rec.aevent("Source instance shut down")
            snap = await _stoppable(workdir, source.snapshot_instance, env, inp.task.instance, workdir, action,
                                    undo=functools.partial(_discard, source, workdir=workdir), stop=action.stop)
            try:
                await rec.aevent(f"Snapshot {snap.snapshot_id} of {len(snap.disks)} disk(s) created "
                                 f"on host {self.services.settings.worker_host_id}")
                await asyncio.to_thread(self.services.store.set_instance_info, inp.task.migration_id,
                                        inp.task.instance, "snapshot", snap.model_dump(mode="json"))
            except asyncio.CancelledError:
                # Not recorded yet: the workflow's cleanup could not find this source snapshot.
                await asyncio.shield(asyncio.to_thread(_discard, source, snap, workdir))
                raise
            return SnapshotResult(snapshot=snap, host_queue=host_queue, workdir=str(workdir))

    @activity.defn(name=names.EXPORT_DISK)
    async def export_disk(self, inp: DiskStepInput) -> DiskStepResult:
        step = inp.step
        assert step.snapshot is not None and step.workdir is not None
        async with task_running(self.services, step.task) as rec:
            source = await self._source(step)
            out = Path(step.workdir) / "export" / f"{safe_name(inp.disk.disk_id)}.raw"
            durable = checkpoint_file(out.parent, out.name, f"export {step.snapshot.snapshot_id} {inp.disk.disk_id}")
            # A checkpoint is only worth something if the partial file it describes survived.
            checkpoint = await asyncio.to_thread(resume_ranges, durable, previous_heartbeat(), out)
            async with source_slot(self.services, source, step.snapshot, rec):
                result, size, resumed = await self._copy(inp, rec, source, out, checkpoint or None, durable)
            # Done: the next step never resumes this copy, and scratch keeps no leftovers.
            await asyncio.to_thread(durable.remove)
            await rec.aevent(
                f"Exported {inp.disk.disk_id}: read {result.bytes_read} bytes, wrote {result.bytes_written}, "
                f"skipped {result.bytes_skipped_zero} zero bytes, resumed {result.chunks_resumed} chunk(s); "
                f"digest {result.digest}{' (verified)' if result.verified else ''}"
            )
            return DiskStepResult(
                disk=DiskLocator(disk_id=inp.disk.disk_id, size_bytes=size, format="raw", path=str(out)),
                bytes_read=result.bytes_read, bytes_written=result.bytes_written,
                resumed_bytes=resumed,
            )

    async def _copy(self, inp: DiskStepInput, rec: TaskRecorder, source: ExportProvider, out: Path,
                    checkpoint: list[tuple[int, int]] | None,
                    durable: CheckpointFile) -> tuple[CopyResult, int, int]:
        """(the copy's result, the disk's size, allocated bytes the checkpoint let it skip)."""
        from diskio.checkpoint import Checkpointer
        from diskio.copier import copy_disk
        from diskio.local import LocalFileTarget
        from diskio.ranges import subtract, total

        step = inp.step
        assert step.snapshot is not None
        src = await asyncio.to_thread(source.open_disk, step.snapshot, inp.disk)
        dst = LocalFileTarget(out, src.size)
        try:
            extents = [(e.offset, e.length) for e in await asyncio.to_thread(src.extents)]
            allocated = total(extents)
            # A new (empty) target holds nothing an earlier attempt wrote: the copier drops the checkpoint.
            resumed = allocated - total(subtract(extents, checkpoint)) if checkpoint and not dst.zero_initialized else 0
            if resumed:
                await rec.aevent(f"Resuming export of {inp.disk.disk_id} from its checkpoint: "
                                 f"{resumed} of {allocated} bytes already copied")
            reporter = await rec.progress(f"Exporting disk {inp.disk.disk_id}", allocated, resumed)
            limit = bandwidth_limit(step.source_environment, "source_environment")
            chunk_size, lanes = _pacing(limit)
            result = await copy_disk(
                src, dst, checkpoint=checkpoint, on_progress=reporter.transfer, bandwidth_limit=limit,
                chunk_size=chunk_size, lanes=lanes, durable=Checkpointer(durable),
            )
        finally:
            await asyncio.to_thread(src.close)
            await asyncio.to_thread(dst.close)
        return result, src.size, resumed

    @activity.defn(name=names.OS_MORPHING)
    async def os_morphing(self, inp: MorphInput) -> MorphResult:
        async with task_running(self.services, inp.step.task) as rec:
            if inp.skip:
                await rec.aevent(OS_MORPHING_SKIPPED)
                return MorphResult(disks=inp.disks, bootable=False)
            dest = await self._destination(inp.step)
            from activities.morphing import morph_disks

            return await morph_disks(inp, dest, inp.origin_type, rec)

    @activity.defn(name=names.CONVERT_DISK)
    async def convert_disk(self, inp: DiskStepInput) -> DiskLocator:
        from activities.replica_deploy import is_snapshot_delta
        from diskio.convert import convert_image, write_qcow2

        step = inp.step
        if is_snapshot_delta(inp.disk):
            async with task_running(self.services, step.task) as rec:
                await rec.aevent(f"{inp.disk.disk_id} goes up as a child of its replica snapshot, with only the "
                                 "blocks the deployment changed: nothing to convert")
                return inp.disk
        assert step.workdir is not None and inp.disk.path is not None
        async with task_running(self.services, step.task) as rec:
            dest = await self._destination(step)
            fmt = dest.TARGET_DISK_FORMAT
            if fmt == inp.disk.format and not inp.flatten:
                await rec.aevent(f"{inp.disk.disk_id} is already {fmt}: nothing to convert")
                return inp.disk
            out = Path(step.workdir) / "convert" / f"{safe_name(inp.disk.disk_id)}.{fmt}"
            out.parent.mkdir(parents=True, exist_ok=True)
            converted = inp.disk.model_copy(update={"format": fmt, "path": str(out)})
            # The input stays until upload has taken the output over (a retry after a kill here reconverts);
            # only an attempt that already finished may find it gone, and its output then stands.
            if out.exists() and not Path(inp.disk.path).exists():
                await rec.aevent(f"{inp.disk.disk_id} was already converted to {fmt} by an earlier attempt")
                return converted
            partial = out.with_name(out.name + ".partial")
            reporter = await rec.progress(f"Converting disk {inp.disk.disk_id} to {fmt}", 10000)
            # qemu-img reports whole percents: 1 % of a large disk (or any disk on a busy host) can take
            # longer than the heartbeat timeout; ``task_running`` heartbeats meanwhile.
            how, result = "", None
            if fmt == "qcow2" and not dest.TARGET_DISK_OPTIONS:
                # the engine writes the image itself, each chunk verified as it is written (diskio.qcow2)
                result = await write_qcow2(inp.disk.path, inp.disk.format, str(partial),
                                           on_progress=reporter.percent)
            if result is not None:
                how = f", every chunk read back and verified (digest {result.digest})"
            else:
                await convert_image(inp.disk.path, inp.disk.format, str(partial), fmt,
                                    options=list(dest.TARGET_DISK_OPTIONS) or None, on_progress=reporter.percent)
            partial.replace(out)
            await rec.aevent(f"Converted {inp.disk.disk_id} from {inp.disk.format} to {fmt}{how}")
            return converted

    @activity.defn(name=names.UPLOAD_DISK)
    async def upload_disk(self, inp: DiskStepInput) -> UploadResult:
        from activities.replica_deploy import is_snapshot_delta, upload_delta
        from diskio.checkpoint import Checkpointer

        step = inp.step
        assert step.export_info is not None and step.workdir is not None
        async with task_running(self.services, step.task) as rec:
            limit = bandwidth_limit(step.destination_environment, "destination_environment")
            reporter = await rec.progress(f"Uploading disk {inp.disk.disk_id}", None)
            dest = await self._destination(step)
            # The provider's target is remote or its own: it decides whether the checkpoint still holds.
            file = checkpoint_file(Path(step.workdir) / "upload", safe_name(inp.disk.disk_id),
                                   f"upload {step.task.migration_id} {inp.disk.disk_id} {inp.disk.path}")
            started = file.path.exists()  # an earlier attempt began this copy, even if it claims nothing yet
            checkpoint = await asyncio.to_thread(resume_ranges, file, previous_heartbeat())
            ctx = TransferContext(
                workdir=Path(step.workdir), progress=reporter.transfer,
                checkpoint=checkpoint if checkpoint or started else None,
                bandwidth_limit=limit, event=rec.event, durable=Checkpointer(file),
            )
            if is_snapshot_delta(inp.disk):
                # A child of the replica snapshot: resumes from the blocks an attempt put (providers.aws.delta).
                imported = (await upload_delta(self.services, inp, rec, ctx)).disk
            else:
                action = await step_context(self.services, step)
                imported = await dest.import_disk(dest_env(step), step.export_info, inp.disk, ctx, action)
            await asyncio.to_thread(file.remove)
            await asyncio.to_thread(_remove_if_empty, file.path.parent)
            # The destination holds the disk now: the raw export that convert read from can go.
            export = Path(step.workdir) / "export" / f"{safe_name(inp.disk.disk_id)}.raw"
            if str(export) != inp.disk.path and not is_snapshot_delta(inp.disk):
                await asyncio.to_thread(export.unlink, True)
            return UploadResult(disk=imported)

    @activity.defn(name=names.DEPLOY_INSTANCE)
    async def deploy(self, inp: DeployInput) -> dict[str, Any]:
        step = inp.step
        assert step.export_info is not None
        now: dict[str, Any] = {}
        async with task_running(self.services, step.task) as rec:
            rec.details = now  # the boot check's stage, as it goes
            dest = await self._destination(step)
            env, action = dest_env(step), await step_context(self.services, step)
            # A cancel waits for a deployment under way (``in_thread``): the cleanup that follows then finds
            # the instance by its tags, instead of running before the instance exists and missing it.
            deployed = await in_thread(dest.deploy_instance, env, step.export_info, inp.disks, action,
                                       on_cancel=lambda: rec.event(DEPLOY_CANCEL_WAITS))
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
        async with task_running(self.services, inp.task) as rec:
            if inp.snapshot is not None:
                source = await self._source(inp)
                await asyncio.to_thread(source.delete_snapshot, inp.snapshot)
                await rec.aevent(f"Source snapshot {inp.snapshot.snapshot_id} of the lost host removed")

    @activity.defn(name=names.CLEANUP_INSTANCE)
    async def cleanup(self, inp: CleanupInput) -> None:
        """Always runs (success, error, cancel); every part tolerates partial state."""
        step = inp.step
        async with task_running(self.services, step.task) as rec:
            # After a force-cancel, the terminated workflow's steps may still run here: they stop
            # before anything they use or write goes.
            if stopped := await stop_others(step.task.migration_id, step.task.instance, STOP_WAIT * 3):
                await rec.aevent(f"Stopped {stopped} step(s) of this instance still running on this host")
            try:
                if step.snapshot is not None:
                    source = await self._source(step)
                    await asyncio.to_thread(source.delete_snapshot, step.snapshot)
                    await rec.aevent(f"Source snapshot {step.snapshot.snapshot_id} removed")
                dest = await self._destination(step)
                action = await step_context(self.services, step)
                removed = await asyncio.to_thread(dest.cleanup, dest_env(step), step.task.instance, inp.disks,
                                                  inp.deployed, inp.succeeded, action)
                for line in removed:
                    await rec.aevent(line)
            finally:
                # Scratch is ours, not a provider's: it goes even when an endpoint can no longer be used
                # (e.g. its path is now outside STERNA_LOCAL_ROOTS). Before the snapshot step returned,
                # the workflow has no workdir: the one its ids give is where that step writes.
                workdir = Path(step.workdir) if step.workdir else scratch_dir(self.services.settings.scratch,
                                                                             step.task)
                if await asyncio.to_thread(remove_tree, workdir):
                    await rec.aevent(f"Scratch space {workdir} removed")
                await asyncio.to_thread(_remove_if_empty, workdir.parent)


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
    remove_tree(workdir)
    _remove_if_empty(workdir.parent)


def remove_tree(folder: Path) -> bool:
    """Remove ``folder`` (False: it was not there), renamed first so that the removal is whole.

    A thread a cancelled step left running (a checkpoint write) finds no path to write to once the
    rename is done; without it, a file made during the walk keeps the folder, and what it holds.
    """
    doomed = folder.with_name(f".{folder.name}.removing-{uuid.uuid4().hex[:8]}")
    try:
        folder.rename(doomed)
    except FileNotFoundError:
        return False
    shutil.rmtree(doomed, ignore_errors=True)
    return True


def _remove_if_empty(folder: Path) -> None:
    """The migration's scratch folder, once its last instance is cleaned up (others may still be running)."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def scratch_dir(root: Path, task: TaskRef) -> Path:
    """An instance's scratch folder on this host: from its ids alone, so it is known before the snapshot
    starts and a cancel at any moment finds what the steps left there."""
    return root / task.migration_id / safe_name(task.instance)


#: seconds a cancelled snapshot waits for its provider call once its children are killed; a call that
#: blocks without a child (a cloud API's snapshot) is left to finish, and undone when it does
STOP_WAIT = 10.0


async def _stoppable(workdir: Path, call: Callable[..., T], *args: Any,
                     undo: Callable[[T | None], None] | None = None, stop: threading.Event | None = None) -> T:
    """A blocking provider call that writes into ``workdir`` (a snapshot copy), stopped by a cancel.

    A thread can't be interrupted, and the ``cp`` it runs would go on to the end: on a cancel, its
    children that write there are killed, the thread is waited for (``STOP_WAIT`` at most), and what
    it wrote is removed, unless the worker is only shutting down (a retry here reuses finished
    copies). ``undo`` gets what the call made (None if it failed), e.g. a source snapshot that
    finished despite the cancel; a call still running then is undone when it ends. ``stop`` is set at
    once: a call that checks it (a download, a wait for a cloud) ends within ``STOP_WAIT`` too.
    """
    running = asyncio.ensure_future(asyncio.to_thread(call, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        if stop is not None:
            stop.set()
        deadline = time.monotonic() + STOP_WAIT
        while not running.done() and time.monotonic() < deadline:  # the call may start a next child after a kill
            await asyncio.to_thread(kill_children_using, workdir)
            await asyncio.wait({running}, timeout=0.5)
        details = activity.cancellation_details()
        if details is not None and details.worker_shutdown:
            raise

        def discard(made: T | None) -> None:
            if undo is not None:
                undo(made)
            remove_tree(workdir)
            _remove_if_empty(workdir.parent)

        if running.done():
            # else the killed child's error: the cancel is what propagates
            ok = not running.cancelled() and running.exception() is None
            await asyncio.to_thread(discard, running.result() if ok else None)
        else:
            loop = asyncio.get_running_loop()

            def when_done(f: asyncio.Future[T]) -> None:
                ok = not f.cancelled() and f.exception() is None
                loop.run_in_executor(None, discard, f.result() if ok else None)

            running.add_done_callback(when_done)
            await asyncio.to_thread(discard, None)  # what is there already goes now
        raise


def safe_name(name: str) -> str:
    """``name`` (a disk or instance id from a provider) as one path component of a worker's scratch."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _pacing(limit: int | None) -> tuple[int, int | None]:
    """Under a bandwidth cap, chunks small enough that one completes (and heartbeats) every ~0.25 s.

    Cancellation reaches an activity only through heartbeats, and a heartbeat is sent when a
    chunk completes: a 4 MiB/s cap on 8 MiB chunks would go silent past the heartbeat timeout.
    """
    from diskio.copier import DEFAULT_CHUNK_SIZE

    if not limit:
        return DEFAULT_CHUNK_SIZE, None  # the copier picks the lanes for the endpoints (copier.pick_lanes)
    return max(64 * 1024, min(DEFAULT_CHUNK_SIZE, limit // 4) // 65536 * 65536), 2
