"""A cancelled OS morphing waits for libguestfs to let go of the disk, and heartbeats meanwhile.

Without the heartbeats the wait outlived the heartbeat timeout: the OS_MORPHING task of a
cancelled deployment (or migration) ended ERROR "activity Heartbeat timeout" instead of CANCELED.
libguestfs is replaced by a function that blocks until released: the subject is the activity's
cancel path, not the morph. The morph runs inside ``heartbeating`` with its recorder's details,
as ``task_running`` runs every task.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.testing import ActivityEnvironment

import osmorphing
from activities import morphing
from activities.task_recorder import heartbeating
from core.models import DiskLocator
from core.settings import Settings
from providers.local.provider import LocalProvider
from workflows.types import MorphInput, StepInput, TaskRef


class _Recorder:
    """The part of ``TaskRecorder`` the morph step uses before libguestfs returns."""

    def __init__(self, data_dir: Path) -> None:
        self.events: list[str] = []
        self.progress: list[str] = []
        self.task_id = "task-1"
        self.details: Any = None
        # the morph's sub-steps are progress updates of its task; its settings say where Windows drivers are
        self.services = SimpleNamespace(
            store=SimpleNamespace(start_progress=lambda task_id, message, total: self.progress.append(message)),
            settings=Settings(data_dir=data_dir))

    async def aevent(self, message: str, level: str = "INFO") -> None:
        self.events.append(message)

    def event(self, message: str, level: str = "INFO") -> None:
        self.events.append(message)


def test_a_cancelled_morph_heartbeats_until_libguestfs_lets_go(monkeypatch: pytest.MonkeyPatch,
                                                               tmp_path: Path) -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def blocking_morph(*args: Any, **kwargs: Any) -> None:
        started.set()
        try:
            release.wait(30)
            raise RuntimeError("libguestfs closed the handle")
        finally:
            finished.set()

    monkeypatch.setattr(osmorphing, "morph_image", blocking_morph)
    disk = tmp_path / "disk-0.qcow2"
    disk.write_bytes(b"")
    inp = MorphInput(
        step=StepInput(task=TaskRef(migration_id="d1", instance="vm-a", task_type="OS_MORPHING"),
                       origin_endpoint_id="a", destination_endpoint_id="b"),
        disks=[DiskLocator(disk_id="disk-0", size_bytes=0, format="qcow2", path=str(disk))],
    )
    beats: list[Any] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(details)

    async def run() -> BaseException | None:
        rec = _Recorder(tmp_path)

        async def morph() -> Any:
            async with heartbeating(details=lambda: rec.details):
                return await morphing.morph_disks(inp, LocalProvider, "", rec)

        work = asyncio.ensure_future(env.run(morph))
        assert await asyncio.to_thread(started.wait, 30)
        env.cancel()

        def settling() -> bool:
            return any(d and isinstance(d[0], dict) and d[0].get("cancelling") for d in beats)

        for _ in range(600):
            if settling() or work.done():
                break
            await asyncio.sleep(0.05)
        assert settling(), f"no heartbeat while waiting for libguestfs after the cancel: {beats}"
        assert not work.done(), "the step must not end while libguestfs still holds the disk"
        release.set()
        try:
            await work
        except BaseException as err:  # the outcome is what is checked
            return err
        return None

    outcome = asyncio.run(run())
    assert finished.is_set()
    assert isinstance(outcome, asyncio.CancelledError), outcome
