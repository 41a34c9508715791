"""Stub activities under the real names (``activities.names``), for running the real workflows alone.

Each stub records what it was called with (its decoded input, queue and attempt) and answers
what a real step would, from its input; a test replaces the stubs whose branch it is about.
The workers poll the four queues a real worker polls (``worker.main``), so the workflows'
pinning to the snapshot's host is exercised as it is in production.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from activities import names
from core.errors import SternaError
from core.models import DeployedInstance, DiskLocator, ImportedDisk, InstanceInfo, SourceSnapshot
from workflows.transfer_types import ActionPlan, OverlayResult, ReplicaResult
from workflows.types import (
    DiskStepResult,
    MorphResult,
    SnapshotResult,
    Timeouts,
    UploadResult,
    ValidateResult,
    probe_queue,
)

#: Fast retries and heartbeats: a test waits seconds, not the production minutes.
FAST = Timeouts(heartbeat=2, transfer=120, short=60, host_schedule_to_start=60, retry_max_interval=1)

Behaviour = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass
class Call:
    name: str
    queue: str
    attempt: int
    arg: dict[str, Any]


def _disk(arg: dict[str, Any]) -> DiskLocator:
    return DiskLocator.model_validate(arg["disk"])


def _host(queue: str) -> str:
    """The host queue that a snapshot taken from ``queue`` (``<q>-data``) pins the next steps to."""
    return queue.removesuffix("-data") + "-host"


async def _nothing(arg: dict[str, Any]) -> None:
    return None


def _answers(disks: list[DiskLocator]) -> dict[str, Behaviour]:
    """What each real step returns, built from its input, for a VM with ``disks``."""

    async def validate(arg: dict[str, Any]) -> ValidateResult:
        name = arg["task"]["instance"]
        return ValidateResult(export_info=InstanceInfo(id=name, name=name, num_cpu=1, memory_mb=512))

    async def snapshot(arg: dict[str, Any]) -> SnapshotResult:
        snap = SourceSnapshot(instance=arg["task"]["instance"], snapshot_id="snap-1", disks=disks)
        return SnapshotResult(snapshot=snap, host_queue=_host(activity.info().task_queue), workdir="/scratch/vm")

    async def export(arg: dict[str, Any]) -> DiskStepResult:
        return DiskStepResult(disk=_disk(arg))

    async def morph(arg: dict[str, Any]) -> MorphResult:
        return MorphResult(disks=[DiskLocator.model_validate(d) for d in arg["disks"]])

    async def convert(arg: dict[str, Any]) -> DiskLocator:
        return _disk(arg).model_copy(update={"format": "qcow2"})

    async def upload(arg: dict[str, Any]) -> UploadResult:
        return UploadResult(disk=ImportedDisk(disk_id=_disk(arg).disk_id))

    async def deploy(arg: dict[str, Any]) -> dict[str, Any]:
        return DeployedInstance(instance=arg["step"]["task"]["instance"], id="i-1").model_dump()

    async def replicate(arg: dict[str, Any]) -> ReplicaResult:
        return ReplicaResult(disk=_disk(arg))

    async def overlay(arg: dict[str, Any]) -> OverlayResult:
        return OverlayResult(disks=[DiskLocator.model_validate(d) for d in arg["disks"]],
                             host_queue=_host(activity.info().task_queue), workdir="/scratch/vm")

    def _plan(action_id: str, execution_id: str, transfer_id: str = "t1") -> ActionPlan:
        """What the record DB holds of a transfer (or a deployment of its replicas) of one VM."""
        return ActionPlan(action_id=action_id, execution_id=execution_id, transfer_id=transfer_id,
                          origin_endpoint_id="src", destination_endpoint_id="dst", origin_type="local",
                          instances=["vm-a"], replicas={"vm-a": disks})

    async def begin_execution(arg: dict[str, Any]) -> ActionPlan:
        plan = _plan(arg["transfer_id"], arg["execution_id"], arg["transfer_id"])
        return plan.model_copy(update={"auto_deploy": arg["auto_deploy"]})

    async def create_auto_deployment(arg: dict[str, Any]) -> str:
        return str(arg["deployment_id"])

    async def begin_deployment(arg: dict[str, Any]) -> ActionPlan:
        return _plan(arg["deployment_id"], arg["deployment_id"] + "-execution")

    return {
        names.BEGIN_TRANSFER_EXECUTION: begin_execution, names.BEGIN_DEPLOYMENT: begin_deployment,
        names.VALIDATE_INSTANCE: validate, names.SNAPSHOT_INSTANCE: snapshot, names.EXPORT_DISK: export,
        names.OS_MORPHING: morph, names.CONVERT_DISK: convert, names.UPLOAD_DISK: upload,
        names.DEPLOY_INSTANCE: deploy, names.REPLICATE_DISK: replicate, names.CREATE_REPLICA_OVERLAY: overlay,
        names.CREATE_AUTO_DEPLOYMENT: create_auto_deployment,
    }


@dataclass
class Stubs:
    """Every activity name, answered by a stub; ``behaviours`` replace the default answers."""

    disks: list[DiskLocator] = field(default_factory=lambda: [DiskLocator(disk_id="disk-0", size_bytes=1 << 20)])
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    #: activity names as they start, and ``cancelled <name>`` when one ends cancelled: the order of both
    events: list[str] = field(default_factory=list)

    def activities(self) -> list[Callable[..., Any]]:
        answers = {**_answers(self.disks), **self.behaviours}
        return [self._stub(value, answers.get(value, _nothing))
                for key, value in vars(names).items() if key.isupper()]

    def _stub(self, name: str, behaviour: Behaviour) -> Callable[..., Any]:
        async def stub(arg: Any) -> Any:
            info = activity.info()
            self.calls.append(Call(name, info.task_queue, info.attempt, arg))
            self.events.append(name)
            try:
                return await behaviour(arg)
            except asyncio.CancelledError:
                self.events.append(f"cancelled {name}")
                raise

        return activity.defn(name=name)(stub)

    def answer(self, name: str) -> Behaviour:
        """The default answer of ``name``, for a behaviour that changes it."""
        return _answers(self.disks).get(name, _nothing)

    def args(self, name: str) -> list[dict[str, Any]]:
        """The inputs ``name`` was called with, in order (one per attempt)."""
        return [c.arg for c in self.calls if c.name == name]

    def of(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]

    def names(self) -> list[str]:
        return [c.name for c in self.calls]


def hosts_lost(stubs: Stubs, lost: int, name: str = names.SNAPSHOT_INSTANCE) -> None:
    """The first ``lost`` calls of ``name`` (the snapshot, or a deployment's overlay: the step that
    chooses the host) pin the instance to a host whose worker is gone (no one polls its queue).
    Each snapshot has its own id, ``snap-<n>``."""
    take = stubs.answer(name)

    async def first_step(arg: dict[str, Any]) -> Any:
        r = await take(arg)
        n = len(stubs.of(name))
        update: dict[str, Any] = {"host_queue": r.host_queue + "-lost" if n <= lost else r.host_queue}
        if isinstance(r, SnapshotResult):
            update["snapshot"] = r.snapshot.model_copy(update={"snapshot_id": f"snap-{n}"})
        return r.model_copy(update=update)

    stubs.behaviours[name] = first_step


def fails(error: SternaError) -> Behaviour:
    """A step that fails as the real activity reports ``error`` (``activities.failures``), but leaves
    ``non_retryable`` unset: the workflow's retry policy alone must decide whether to try again."""

    async def behaviour(arg: dict[str, Any]) -> None:
        raise ApplicationError(error.message, type=error.code)

    return behaviour


@dataclass
class Blocking:
    """A long step: heartbeats until the workflow cancels it (then says so and ends cancelled), or until
    the test releases it (then ends well)."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, arg: dict[str, Any]) -> None:
        self.started.set()
        try:
            while not self.release.is_set():
                activity.heartbeat({"bytes_done": 0})
                with suppress(TimeoutError):
                    await asyncio.wait_for(self.release.wait(), 0.2)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def cancel_during(handle: WorkflowHandle[Any, Any],
                        step: Blocking) -> tuple[BaseException | None, WorkflowExecutionStatus | None]:
    """Cancel the workflow once ``step`` runs; the cause it failed with, and its final status."""
    await asyncio.wait_for(step.started.wait(), 30)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    return failed.value.cause, (await handle.describe()).status


async def cancel_processed(handle: WorkflowHandle[Any, Any]) -> list[EventType.ValueType]:
    """The history once a workflow task has run after the cancel request (the workflow has seen it)."""
    return await stepped_past(handle, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)


async def stepped_past(handle: WorkflowHandle[Any, Any], event: EventType.ValueType) -> list[EventType.ValueType]:
    """The history once a workflow task has run after the first ``event`` (the workflow has seen it)."""
    events: list[EventType.ValueType] = []
    for _ in range(300):
        events = [e.event_type async for e in handle.fetch_history_events()]
        if event in events and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in events[events.index(event):]:
            return events
        await asyncio.sleep(0.1)
    raise AssertionError(f"the workflow never took {EventType.Name(event)}: {events}")


@asynccontextmanager
async def workers(client: Client, stubs: Stubs, workflows: Sequence[type]) -> AsyncIterator[str]:
    """Workers for a fresh task queue ``<q>``, ``<q>-data``, ``<q>-host`` and its probe queue; yields ``<q>``."""
    queue = f"wf-branches-{uuid.uuid4()}"
    async with AsyncExitStack() as stack:
        for q, wf in ((queue, list(workflows)), (queue + "-data", []), (queue + "-host", []),
                      (probe_queue(queue + "-host"), [])):
            await stack.enter_async_context(Worker(client, task_queue=q, workflows=wf,
                                                   activities=stubs.activities()))
        yield queue
