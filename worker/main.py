"""``sterna worker``: workflows, light activities and this host's disk activities.

A worker polls four task queues:

* ``<q>``           workflows and light activities (validate, boot, record)
* ``<q>-data``      the first disk activity of an instance, on whichever host is free
* ``<q>-host-<id>`` everything after it that touches that host's scratch copy
* ``<q>-host-<id>-probe`` ``HOST_ALIVE`` only, with slots of its own: a step that waited too long on
  the host's queue asks it whether it is busy or gone (``workflows.hosts``)

``<id>`` is ``STERNA_WORKER_HOST_ID`` (default: the hostname) and must be stable across
restarts: a worker that comes back after a crash picks up its host's pending retries.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.endpoint import EndpointActivities
from activities.environments import SecretEnvironments
from activities.liveness import host_alive
from activities.outcomes import RecordActivities
from activities.services import Services
from activities.steps import MigrationActivities
from activities.transfers import TransferActivities
from activities.trusts import TrustActivities
from core import tracing
from core.children import mark_children, sweep
from core.settings import Settings, get_settings
from core.temporal import connect
from worker.loop_watch import LoopWatch
from worker.observe import Observability, runtime, serve_metrics
from workflows.cleanup import ForcedCleanupWorkflow
from workflows.deployment import DeploymentInstanceWorkflow, DeploymentWorkflow
from workflows.endpoint import EndpointCallWorkflow
from workflows.instance import InstanceMigrationWorkflow
from workflows.migration import MigrationWorkflow
from workflows.transfer import TransferExecutionWorkflow, TransferInstanceWorkflow
from workflows.types import probe_queue

log = logging.getLogger("sterna.worker")
#: concurrent probes a host answers: each returns at once, so a few serve any number of waiting steps
PROBE_SLOTS = 4


def _log_windows_sources(settings: Settings) -> None:
    """Say at start which Windows targets this host can convert for (set paths were checked by Settings)."""
    from activities.morphing import windows_sources
    from osmorphing.winsources import WINDOWS_TARGETS

    found = windows_sources(settings)
    for target in WINDOWS_TARGETS:
        missing = found.missing(target)
        if missing:
            log.info("Windows guests for %s: not on this host: %s", target, "; ".join(missing))


def blocking_executor(settings: Settings) -> ThreadPoolExecutor:
    """The event loop's default executor, which ``asyncio.to_thread`` uses for every blocking call.

    asyncio's own default has ``cpu_count + 4`` threads: 6 on a 2-core host. A disk activity holds one
    for minutes (a morph, a snapshot copy, a boot check), and up to ``max_disk_activities`` run on each
    of the two disk queues, each with a provider call beside it. The short calls that every activity
    makes first (its task's status and events in the record DB) then queued behind them for longer than
    a heartbeat timeout: activities failed on "Heartbeat timeout" before they had begun.
    """
    return ThreadPoolExecutor(max_workers=max(32, 4 * settings.max_disk_activities + 16),
                              thread_name_prefix="sterna-blocking")


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    asyncio.get_running_loop().set_default_executor(blocking_executor(settings))
    # What a previous worker on this scratch left running (qemu-nbd holding a deleted export...) goes first.
    killed = sweep(settings.scratch)
    if killed:
        log.warning("killed %d process(es) left by a previous worker: %s", len(killed), killed)
    mark_children(settings.scratch)
    _log_windows_sources(settings)
    client = await connect(settings, runtime=runtime(settings), service="sterna-worker")
    serve_metrics(settings)
    services = Services.create(settings)
    steps = MigrationActivities(services)
    record = RecordActivities(services)
    transfers = TransferActivities(services)
    light: list[Callable[..., Any]] = [
        steps.validate, record.record_task, record.record_unfinished, record.record_migration_status,
        EndpointActivities(services).call, TrustActivities(services).release,
        transfers.begin_execution, transfers.finish_execution, transfers.begin_deployment,
        transfers.create_auto_deployment,
    ]
    disk: list[Callable[..., Any]] = [
        steps.snapshot, steps.export_disk, steps.os_morphing, steps.convert_disk, steps.upload_disk,
        steps.deploy, steps.cleanup, transfers.replicate_disk, transfers.create_overlay,
    ]
    executor = ThreadPoolExecutor(max_workers=16)
    interceptors = [Observability(), SecretEnvironments(services)]
    throttle = timedelta(seconds=settings.heartbeat_throttle)
    beats: dict[str, Any] = dict(max_heartbeat_throttle_interval=throttle, default_heartbeat_throttle_interval=throttle)
    workers = [
        Worker(client, task_queue=settings.task_queue,
               workflows=[MigrationWorkflow, InstanceMigrationWorkflow, EndpointCallWorkflow, ForcedCleanupWorkflow,
                          TransferExecutionWorkflow, TransferInstanceWorkflow, DeploymentWorkflow,
                          DeploymentInstanceWorkflow],
               activities=light, activity_executor=executor, interceptors=interceptors,
               workflow_runner=tracing.workflow_runner(SandboxedWorkflowRunner(), settings), **beats),
        Worker(client, task_queue=settings.data_task_queue,
               activities=[steps.snapshot, steps.cleanup, steps.release_snapshot, transfers.create_overlay],
               max_concurrent_activities=settings.max_disk_activities, activity_executor=executor,
               interceptors=interceptors, **beats),
        Worker(client, task_queue=settings.host_task_queue, activities=disk,
               max_concurrent_activities=settings.max_disk_activities, activity_executor=executor,
               interceptors=interceptors, **beats),
        # Slots of its own: it answers while every disk slot is held (busy is not lost, workflows.hosts).
        Worker(client, task_queue=probe_queue(settings.host_task_queue), activities=[host_alive],
               max_concurrent_activities=PROBE_SLOTS, interceptors=interceptors),
    ]
    # Started once the workers are built: building them (their build id hashes every loaded module,
    # the sandbox imports each workflow) holds the loop for seconds, before any activity runs.
    watch = LoopWatch(settings.loop_stall_warning)
    watch.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling %s, %s, %s (and its probe queue) at %s", settings.task_queue,
             settings.data_task_queue, settings.host_task_queue, settings.temporal_address)
    runs = [asyncio.create_task(w.run()) for w in workers]
    await stop.wait()
    log.info("worker shutting down")
    # shutdown() is what stops polling and waits for running activities (sdk-python#367).
    await asyncio.gather(*(w.shutdown() for w in workers))
    await asyncio.gather(*runs, return_exceptions=True)
    executor.shutdown(wait=False)
    await asyncio.to_thread(tracing.shutdown)
    await watch.stop()


def main() -> None:
    asyncio.run(run_worker(get_settings()))
