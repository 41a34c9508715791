"""Task status, events and progress, written to the record DB from inside activities."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from temporalio import activity

from activities.failures import to_application_error
from activities.metrics import BYTES_MOVED, labels
from activities.running import STOPPED_FOR_CLEANUP, registered
from activities.services import Services
from diskio.checkpoint import boot_id
from providers.base import TransferProgress
from workflows.types import Heartbeat, Status, TaskRef


class TaskRecorder:
    """Status and events of one Coriolis task, seen from the activity that performs it."""

    def __init__(self, services: Services, task: TaskRef, task_id: str) -> None:
        self.services = services
        self.task = task
        self.task_id = task_id
        #: what this task's heartbeats carry (a copy's checkpoint, a boot check's stage, a morph's
        #: sub-step); ``task_running`` sends the latest every second, whatever the activity awaits
        self.details: Any = None

    def event(self, message: str, level: str = "INFO") -> None:
        """Thread-safe, synchronous: providers call it from worker threads."""
        activity.logger.info("%s %s: %s", self.task.instance, self.task.task_type, message)
        self.services.store.add_event(self.task_id, message, level)

    async def aevent(self, message: str, level: str = "INFO") -> None:
        await asyncio.to_thread(self.event, message, level)

    async def progress(self, message: str, total: int | None, already_done: int = 0) -> ProgressReporter:
        """``already_done``: bytes a resumed transfer copied in earlier attempts (not moved again)."""
        index = await asyncio.to_thread(self.services.store.start_progress, self.task_id, message, total)
        return ProgressReporter(self, index, total, already_done)


class ProgressReporter:
    """Heartbeats every call; writes a progress update only when the whole percentage rises."""

    def __init__(self, recorder: TaskRecorder, index: int, total: int | None, already_done: int = 0) -> None:
        self.recorder = recorder
        self.index = index
        self.total = total
        self._percent = -1
        self._last_write = 0.0
        #: bytes_done already counted in the metrics (a resumed copy starts from its checkpoint)
        self._counted = already_done

    async def transfer(self, p: TransferProgress) -> None:
        self._count(p.bytes_done)
        self._beat(Heartbeat(bytes_done=p.bytes_done, bytes_total=p.bytes_total, checkpoint=p.checkpoint,
                             boot=boot_id()))
        await self._record(p.bytes_done, p.bytes_total)
        # Yield to the loop so a cancel delivered with the heartbeat response lands here.
        await asyncio.sleep(0)

    async def percent(self, value: float) -> None:
        self._beat(Heartbeat(bytes_done=int(value * 100), bytes_total=10000))
        await self._record(int(value * 100), 10000)
        await asyncio.sleep(0)

    def _beat(self, beat: Heartbeat) -> None:
        # Sent now, so a cancel answers this chunk; kept, so the background beats carry it too (a
        # detail-less heartbeat would replace the checkpoint that the next attempt resumes from).
        self.recorder.details = beat
        activity.heartbeat(beat)

    def _count(self, done: int) -> None:
        if done > self._counted:
            step = labels()
            BYTES_MOVED.labels(step.task_type, step.provider).inc(done - self._counted)
            self._counted = done

    async def _record(self, done: int, total: int) -> None:
        if total <= 0:
            return
        percent = min(100, done * 100 // total)
        if percent > self._percent:
            self._percent = percent
            store = self.recorder.services.store
            await asyncio.to_thread(store.update_progress, self.recorder.task_id, self.index, done, total)
            self._last_write = time.monotonic()


@asynccontextmanager
async def heartbeating(details: Callable[[], Any] | None = None) -> AsyncIterator[None]:
    """Heartbeat in the background, for as long as the block runs (``task_running`` wraps every task in it).

    Blocking calls in threads report nothing of their own; the heartbeat lets Temporal notice a dead
    worker within one heartbeat timeout instead of the step's whole start-to-close timeout, and
    never mistake a live but slow await for one.
    """
    timeout = activity.info().heartbeat_timeout
    # Every second at most: a heartbeat call is local (the worker sends one per throttle interval), and
    # the sent one is what a cancel answers, so a snapshot copy stops within seconds of it.
    period = min(timeout.total_seconds() / 4 if timeout else 5.0, 1.0)

    async def beat() -> None:
        while True:
            # ``details``: what the blocking call is doing now (a boot check's stage), shown by
            # ``temporal workflow describe``
            current = details() if details is not None else None
            if isinstance(current, dict):
                current = dict(current)  # encoded later, while its owner may change it
            if current:
                activity.heartbeat(current)
            else:
                activity.heartbeat()
            await asyncio.sleep(period)

    beater = asyncio.create_task(beat())
    try:
        yield
    finally:
        beater.cancel()
        with suppress(asyncio.CancelledError):
            await beater


def _why_stopped(exc: asyncio.CancelledError) -> str:
    """The event of a cancelled attempt. Temporal cancels an attempt it gave up on (heartbeat timeout,
    terminated workflow) too, at its next heartbeat, and a cleanup stops the steps it finds running
    (``activities.running``): say which, for whoever reads the task's events."""
    if exc.args and exc.args[0] == STOPPED_FOR_CLEANUP:
        return STOPPED_FOR_CLEANUP
    details = activity.cancellation_details()
    if details is not None and details.not_found:
        return "Temporal no longer runs this attempt (it timed out, or its workflow was terminated): stopped"
    if details is not None and details.worker_shutdown:
        return "The worker is shutting down: stopped"
    return "Cancellation requested: stopped"


@asynccontextmanager
async def task_running(services: Services, task: TaskRef) -> AsyncIterator[TaskRecorder]:
    """Mark the task RUNNING on this host; COMPLETED on success.

    Failures are recorded as events only: whether an attempt failure is final is the
    workflow's decision (retry policy), so it records ERROR/CANCELED itself.
    """
    recorder: TaskRecorder | None = None
    # Until this attempt has details of its own, it carries on the previous attempt's (a copy's
    # checkpoint): a detail-less beat would erase them before the next attempt could resume from them.
    carried = next(iter(activity.info().heartbeat_details), None)
    # The whole attempt heartbeats, from its first await: any of them (a record DB write queued
    # behind a lock, a provider's API call, an fsync on a busy disk) can outlast the heartbeat
    # timeout, and Temporal would take the live attempt for a dead worker's.
    async with heartbeating(details=lambda: recorder.details if recorder is not None else carried), \
            registered(task.migration_id, task.instance):
        store = services.store
        task_id = await asyncio.to_thread(store.task_id, task.migration_id, task.instance, task.task_type,
                                          task.execution_id)
        await asyncio.to_thread(
            store.set_task_status, task.migration_id, task.instance, task.task_type, Status.RUNNING,
            host=services.settings.worker_host_id, process_id=os.getpid(), execution_id=task.execution_id,
        )
        recorder = TaskRecorder(services, task, task_id)
        recorder.details = carried
        attempt = activity.info().attempt
        if attempt > 1:
            await recorder.aevent(f"Attempt {attempt} on host {services.settings.worker_host_id}")
        try:
            yield recorder
        except asyncio.CancelledError as exc:
            await asyncio.shield(recorder.aevent(_why_stopped(exc), "WARNING"))
            raise
        except Exception as exc:
            err = to_application_error(exc)
            await recorder.aevent(f"Attempt {attempt} failed: {err.message}", "WARNING" if not err.non_retryable
                                  else "ERROR")
            raise err from exc
        await asyncio.to_thread(
            store.set_task_status, task.migration_id, task.instance, task.task_type, Status.COMPLETED,
            execution_id=task.execution_id,
        )
