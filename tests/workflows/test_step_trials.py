"""Issue 11's trials: a worker kill and a cancel inside every step, each followed by an inventory.

A kill (SIGKILL of the worker, then a restart) during snapshot, export, convert, upload, deploy or
cleanup must end COMPLETED, with the step run again and a destination disk identical to the
source. A cancel during each of those steps must end CANCELED with nothing left: no scratch
files, no destination files, no qemu-img/qemu-nbd/cp process, no open workflow
(``tests.leftovers``).

Landing inside a step: export is slowed by its bandwidth limit and convert by a rate-limited
``qemu-img`` (``convert_rate`` of the test-only ``gated-local`` provider); the other steps take
milliseconds, so that provider holds them at a gate until the test lets them go
(``tests.peers.gated``). A step counts as under way when Temporal lists its activity as pending
for the instance's workflow and the step shows it (gate reached, or progress past zero).

The trials of a phase run concurrently; one worker kill serves several kill trials. Kill trials
run in two rounds: their held steps and running copies would otherwise need more disk-activity
slots (``max_disk_activities``) than the worker has.

Either engine path runs the trials (``STERNA_MIGRATIONS_ON_TRANSFERS``): the one-shot
``MigrationWorkflow``, or a transfer execution and its deployment. A step is the same work on
both; its activity and the legacy task that shows it are the path's own (``STEP``), and the
workflows looked at are the migration's, found in Temporal by their root (``tests.leftovers``).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities import names
from activities.steps import DEPLOY_CANCEL_WAITS
from client.sdk import SternaClient
from tests.conftest import RunningStack, task, wait_final, wait_for
from tests.helpers import identical, inventories
from tests.leftovers import cancel_requested, leftovers, migration_workflows, pending_in_migration
from tests.peers.gated import CLEANUP_STARTED, DEPLOY_RETURNED, DEPLOY_START, JOURNAL, PLATFORM, RELEASE, SNAPSHOT_START
from tests.peers.gated import STEPS as GATED
from workflows.cleanup import ForcedCleanupWorkflow
from workflows.deployment import DeploymentInstanceWorkflow, DeploymentWorkflow
from workflows.instance import InstanceMigrationWorkflow
from workflows.migration import MigrationWorkflow
from workflows.transfer import TransferExecutionWorkflow, TransferInstanceWorkflow
from workflows.types import TaskType

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
#: step -> (its activity, the migration's task that shows it): one-shot path, transfer path. On
#: transfers the disk copy is the replication into the replica disk; "convert" is the flattening of
#: the deployment's overlay, shown under IMPORT_DISKS (``api.live_migration_views``); "cleanup" is
#: the deployment's, after its deploy (the execution's release of its snapshot has its own gate).
STEP: dict[str, tuple[tuple[str, TaskType], tuple[str, TaskType]]] = {
    "snapshot": ((names.SNAPSHOT_INSTANCE, TaskType.SNAPSHOT), (names.SNAPSHOT_INSTANCE, TaskType.SNAPSHOT)),
    "export": ((names.EXPORT_DISK, TaskType.EXPORT), (names.REPLICATE_DISK, TaskType.EXPORT)),
    "convert": ((names.CONVERT_DISK, TaskType.CONVERT), (names.CONVERT_DISK, TaskType.UPLOAD)),
    "upload": ((names.UPLOAD_DISK, TaskType.UPLOAD), (names.UPLOAD_DISK, TaskType.UPLOAD)),
    "deploy": ((names.DEPLOY_INSTANCE, TaskType.BOOT), (names.DEPLOY_INSTANCE, TaskType.BOOT)),
    "cleanup": ((names.CLEANUP_INSTANCE, TaskType.CLEANUP), (names.CLEANUP_INSTANCE, TaskType.CLEANUP)),
}
#: every workflow either path runs for a migration, for the replay
WORKFLOWS = [MigrationWorkflow, InstanceMigrationWorkflow, TransferExecutionWorkflow, TransferInstanceWorkflow,
             DeploymentWorkflow, DeploymentInstanceWorkflow, ForcedCleanupWorkflow]
#: the cancel trial of a snapshot held before its copy: the copy is made after the cancel
EARLY_SNAPSHOT = "snapshot, before its copy"
#: the cancel trial of a deploy held before it makes the instance: the instance is made after the cancel,
#: and the cleanup must still find it (the activity waits for the call under way)
EARLY_DEPLOY = "deploy, before the instance is made"
#: the cancel trials held at a gate before their step's work, by key: (step, gate)
EARLY = {EARLY_SNAPSHOT: ("snapshot", SNAPSHOT_START), EARLY_DEPLOY: ("deploy", DEPLOY_START)}
#: the kill trial of a cancel's cleanup (issue 11: a kill there made the cancel take 10 minutes)
CANCELLED_CLEANUP = "cleanup of a cancel"
#: kill rounds: at most four steps on the host's queue at once (export, convert, upload, deploy, cleanup run there)
KILL_ROUNDS = (("snapshot", "export", "convert", "upload"), ("deploy", "cleanup", CANCELLED_CLEANUP))


@dataclass
class Trial:
    stack: RunningStack
    step: str
    api: SternaClient
    src: Path
    dst: Path
    gates: Path
    key: str = ""
    #: the closed gate that holds this trial in its step (none for export and convert)
    gate: str | None = None
    #: every gate closed for this trial
    closed: frozenset[str] = frozenset()
    migration_id: str = ""
    #: the migration runs as a transfer (the API names the transfer it is)
    on_transfers: bool = False
    #: the workflow in which the step's activity was last seen pending
    workflow_id: str = ""
    final: dict[str, Any] = field(default_factory=dict)
    error: BaseException | None = None

    @property
    def activity(self) -> str:
        return STEP[self.step][self.on_transfers][0]

    @property
    def task_type(self) -> str:
        return STEP[self.step][self.on_transfers][1].value

    @property
    def held_at(self) -> str | None:
        """The gate the trial waits at: a cancel in the snapshot of a transfer's execution runs its
        release, not a deployment's cleanup (there is no deployment)."""
        return RELEASE if self.on_transfers and self.key == CANCELLED_CLEANUP else self.gate

    def release(self) -> None:
        for gate in self.closed:
            (self.gates / gate).unlink(missing_ok=True)

    def in_step(self) -> bool:
        """The step's activity is pending in Temporal and the step itself is under way."""
        pending = [wid for wid, name, _ in pending_in_migration(self.stack, self.migration_id) if name == self.activity]
        if not pending:
            return False
        self.workflow_id = pending[0]
        if self.held_at:
            return (self.gates / f"{self.held_at}.entered").exists()
        t = task(self.api.get_migration(self.migration_id), "vm-a", self.task_type)
        p = t["progress_updates"]
        return t["status"] == "RUNNING" and bool(p) and 0 < p[-1]["current_step"] < (p[-1]["total_steps"] or 0)

    def events(self, task_type: str | None = None) -> list[str]:
        return [e["message"] for e in task(self.final, "vm-a", task_type or self.task_type)["events"]]


def start(stack: RunningStack, step: str, *, also: tuple[str, ...] = (), key: str = "",
          gate: str | None = None) -> Trial:
    """A one-VM migration between gated endpoints, held at ``gate`` (by default the gate of ``step``,
    for a gated step); the gates of ``also`` are closed too."""
    gate = gate or (step if step in GATED else None)
    src, dst = inventories(stack, ["vm-a"], data_mib={"export": 48, "convert": 24}.get(step, 4))
    gates = stack.root / "gates" / src.name
    gates.mkdir(parents=True)
    closed = frozenset(str(g) for g in {gate, *also} - {None})
    for name in closed:
        (gates / name).touch()
    api = stack.client()
    trial = Trial(stack, step, api, src, dst, gates, key or step, gate, closed)
    origin = api.create_endpoint(f"src-{src.name}", PLATFORM, {"path": str(src), "gates": str(gates)})
    dest_info: dict[str, Any] = {"path": str(dst), "gates": str(gates)}
    if step == "convert":
        dest_info["convert_rate"] = 4 * MiB  # 24 MiB of data: ~6 s of qemu-img
    dest = api.create_endpoint(f"dst-{dst.name}", PLATFORM, dest_info)
    env = {"bandwidth_limit": 4 * MiB} if step == "export" else {}  # 48 MiB: ~12 s of copy
    created = api.create_migration(origin_endpoint_id=origin["id"], destination_endpoint_id=dest["id"],
                                   instances=["vm-a"], source_environment=env)
    trial.migration_id, trial.on_transfers = created["id"], bool(created["transfer_id"])
    return trial


def cancel_reached(trial: Trial, task_type: str) -> bool:
    return any("Cancellation requested" in e["message"]
               for e in task(trial.api.get_migration(trial.migration_id), "vm-a", task_type)["events"])


def cancelled_into_cleanup(stack: RunningStack) -> Trial:
    """A migration cancelled in its held snapshot, on its way to the (held) cleanup that the cancel runs
    (on transfers, the execution's release)."""
    trial = start(stack, "cleanup", also=("snapshot", RELEASE), key=CANCELLED_CLEANUP)
    try:
        wait_for((trial.gates / "snapshot.entered").exists, 180, 0.2, "the snapshot held")
        trial.api.cancel_migration(trial.migration_id)
        wait_for(lambda: cancel_reached(trial, TaskType.SNAPSHOT.value), 60, 0.3, "the cancel to reach the snapshot")
    except BaseException:
        trial.release()
        raise
    finally:
        (trial.gates / "snapshot").unlink()
    return trial


def kill_round(stack: RunningStack, steps: tuple[str, ...]) -> list[Trial]:
    """Hold every trial of the round inside its step, kill the worker once, restart it, let them go on."""
    trials: list[Trial] = []
    try:
        for s in steps:
            if s in GATED or s == CANCELLED_CLEANUP:
                trials.append(cancelled_into_cleanup(stack) if s == CANCELLED_CLEANUP else start(stack, s))
        wait_for(lambda: all(t.in_step() for t in trials), 180, 0.3, f"{[t.key for t in trials]} held")
        # Copies last seconds, not indefinitely: they start once the held steps are in place.
        moving = [start(stack, s) for s in steps if s not in GATED and s != CANCELLED_CLEANUP]
        trials += moving
        wait_for(lambda: all(t.in_step() for t in moving), 120, 0.2, f"{[t.step for t in moving]} under way")
        worker = stack.stack.procs["worker"]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    finally:
        # Also when a trial never got into its step: held migrations would keep worker slots for good.
        for t in trials:
            t.release()
    stack.stack.restart("worker")
    for t in trials:
        try:
            t.final = wait_final(t.api, t.migration_id, timeout=240)
        except BaseException as err:
            t.error = err
    return trials


def cancel_trial(stack: RunningStack, key: str) -> Trial:
    step, gate = EARLY.get(key, (key, None))
    trial = start(stack, step, key=key, gate=gate)
    try:
        wait_for(trial.in_step, 180, 0.2, f"{step} under way")
        trial.api.cancel_migration(trial.migration_id)
        if step == "cleanup":
            # The cleanup is shielded from the cancel by design; the instance's workflow must have it.
            wait_for(lambda: cancel_requested(stack, trial.workflow_id), 60, 0.3,
                     "the cancel to reach the instance's workflow")
        elif trial.gate:
            # The held step itself must see the cancel.
            wait_for(lambda: cancel_reached(trial, trial.task_type), 60, 0.3, f"the cancel to reach the held {step}")
        if key == EARLY_DEPLOY:
            # The instance is made when the gate opens: open it once nothing else can come first. The deploy
            # says it waits for its call, or (the leak this trial is for) the cleanup has run without waiting.
            wait_for(lambda: _deploy_waits_or_cleaned(trial), 60, 0.3, "the deploy to wait, or the cleanup to end")
        trial.release()
        trial.final = wait_final(trial.api, trial.migration_id, timeout=120)
    except BaseException as err:
        trial.error = err
    finally:
        trial.release()
    return trial


def _deploy_waits_or_cleaned(trial: Trial) -> bool:
    m = trial.api.get_migration(trial.migration_id)
    waits = any(e["message"] == DEPLOY_CANCEL_WAITS for e in task(m, "vm-a", trial.task_type)["events"])
    return waits or task(m, "vm-a", TaskType.CLEANUP.value)["status"] == "COMPLETED"


def _close(trials: list[Trial]) -> None:
    for t in trials:
        t.api.close()


@pytest.fixture(scope="module")
def killed(stack: RunningStack) -> Iterator[dict[str, Trial]]:
    trials = [t for steps in KILL_ROUNDS for t in kill_round(stack, steps)]
    yield {t.key: t for t in trials}
    _close(trials)


@pytest.fixture(scope="module")
def cancelled(stack: RunningStack) -> Iterator[dict[str, Trial]]:
    keys = [*STEP, *EARLY]
    with ThreadPoolExecutor(len(keys)) as pool:
        trials = list(pool.map(lambda key: cancel_trial(stack, key), keys))
    yield {t.key: t for t in trials}
    _close(trials)


@pytest.mark.parametrize("step", list(STEP))
def test_worker_killed_during_step_completes_identical(killed: dict[str, Trial], step: str) -> None:
    t = killed[step]
    if t.error is not None:
        raise t.error
    assert t.final["last_execution_status"] == "COMPLETED", [(x["task_type"], x["exception_details"])
                                                              for x in t.final["tasks"]]
    # The kill landed inside the step: a new attempt of it ran on the restarted worker.
    assert any(e.startswith("Attempt ") and " on host " in e for e in t.events()), t.events()
    assert identical(t.src / "vm-a" / "disk-0.raw", t.dst / "vm-a" / "disk-0.qcow2")
    assert leftovers(t.stack, t.final, t.src, t.dst, kept=frozenset({"vm-a"})) == []


@pytest.mark.parametrize("key", [*STEP, *EARLY])
def test_cancel_during_step_leaves_nothing(cancelled: dict[str, Trial], key: str) -> None:
    t = cancelled[key]
    step = t.step
    if t.error is not None:
        raise t.error
    assert t.final["last_execution_status"] == "CANCELED", [(x["task_type"], x["status"]) for x in t.final["tasks"]]
    if step != "cleanup":
        assert task(t.final, "vm-a", t.task_type)["status"] == "CANCELED"
        assert "Cancellation requested: stopped" in " ".join(t.events())
    assert task(t.final, "vm-a", TaskType.CLEANUP.value)["status"] == "COMPLETED"
    assert leftovers(t.stack, t.final, t.src, t.dst) == []
    if key == EARLY_DEPLOY:
        # A cloud makes the instance whatever the cleanup did meanwhile: the cleanup must come after the call
        # under way returned, or it looks for the instance before it exists (a running instance leaked).
        assert (t.gates / JOURNAL).read_text().split("\n")[:2] == [DEPLOY_RETURNED, CLEANUP_STARTED]
    assert (t.src / "vm-a" / "disk-0.raw").exists(), "the source is untouched"


def test_worker_killed_during_a_cancels_cleanup_ends_canceled_with_nothing_left(killed: dict[str, Trial]) -> None:
    t = killed[CANCELLED_CLEANUP]
    if t.error is not None:
        raise t.error
    assert t.final["last_execution_status"] == "CANCELED", [(x["task_type"], x["status"]) for x in t.final["tasks"]]
    assert any(e.startswith("Attempt ") and " on host " in e for e in t.events()), t.events()
    assert task(t.final, "vm-a", TaskType.CLEANUP.value)["status"] == "COMPLETED"
    assert leftovers(t.stack, t.final, t.src, t.dst) == []


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_a_step_that_reports_nothing_for_two_heartbeat_timeouts_is_not_taken_for_a_dead_worker(
        stack: RunningStack) -> None:
    """CI failed on "activity Heartbeat timeout" of live attempts under load: a step heartbeat only
    when it reported progress, and any other await (a record DB write behind a lock, a provider call,
    an fsync) could outlast the timeout. The upload is held, reporting nothing, for two timeouts."""
    trial = start(stack, "upload")
    try:
        wait_for(trial.in_step, 180, 0.2, "the upload held")
        # Time itself is the subject: two heartbeat timeouts pass with no progress reported.
        time.sleep(2 * stack.settings.heartbeat_timeout)
    finally:
        trial.release()
    trial.final = wait_final(trial.api, trial.migration_id, timeout=120)
    trial.api.close()
    assert trial.final["last_execution_status"] == "COMPLETED", [(x["task_type"], x["exception_details"])
                                                                  for x in trial.final["tasks"]]
    assert [e for e in trial.events() if e.startswith("Attempt ")] == [], trial.events()


def test_trial_histories_replay(stack: RunningStack, killed: dict[str, Trial], cancelled: dict[str, Trial]) -> None:
    """The histories of kills, retries and cancels in every step replay with today's workflow code."""

    async def replay(trials: list[Trial]) -> int:
        client = await Client.connect(stack.settings.temporal_address, namespace=stack.settings.temporal_namespace,
                                      data_converter=pydantic_data_converter)
        replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
        counts = {}
        for t in trials:
            runs = await asyncio.to_thread(migration_workflows, stack, t.migration_id)
            for run in runs:
                history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
                result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
                assert result.replay_failure is None, (t.key, run.id, result.replay_failure)
            # the migration's own workflow and its instance's (or the execution's and its instance's)
            counts[t.key] = len(runs)
        return counts

    trials = [*killed.values(), *cancelled.values()]
    counts = asyncio.run(replay(trials))
    assert all(n >= 2 for n in counts.values()), counts
