"""Issue 11 reproducers: no step waits a day for a dead worker, no step retries forever."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment

from activities.services import Services
from activities.steps import MigrationActivities
from core.models import DiskLocator
from core.settings import reset_settings
from core.tasks import DeployTask
from tests.conftest import RunningStack, task, wait_final
from tests.helpers import endpoints, identical, inventories, start_slow_migration
from tests.leftovers import deployments_of, migration_workflows
from workflows.instance import DISK_ATTEMPTS
from workflows.types import DiskStepInput, StepInput, TaskRef, TaskType

pytestmark = pytest.mark.slow


#: the per-disk steps: the disk copy (the one-shot export, or the replication on transfers), convert, upload
DISK_STEPS = ("export_disk", "replicate_disk", "convert_disk", "upload_disk")
#: the most seconds between two heartbeats of a step that copies or rewrites a whole disk inside one call
#: (the transfer's snapshot, OS morphing: ``workflows.steps``); every other step heartbeats at the setting
LONG_CALL_HEARTBEAT = 30.0


def _scheduled(stack: RunningStack, migration_id: str) -> dict[str, list[tuple[float, int]]]:
    """Activity name -> [(heartbeat timeout in s, maximum attempts)] as scheduled in the histories of
    every workflow of the migration (its own and all it started, whichever engine path ran it)."""
    runs = migration_workflows(stack, migration_id)

    async def read() -> dict[str, list[tuple[float, int]]]:
        client = await Client.connect(stack.settings.temporal_address, data_converter=pydantic_data_converter)
        out: dict[str, list[tuple[float, int]]] = {}
        for run in runs:
            history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
            for event in history.events:
                if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                    attrs = event.activity_task_scheduled_event_attributes
                    out.setdefault(attrs.activity_type.name, []).append(
                        (attrs.heartbeat_timeout.ToTimedelta().total_seconds(), attrs.retry_policy.maximum_attempts))
        return out

    return asyncio.run(read())


def test_long_steps_heartbeat_and_disk_steps_have_bounded_attempts(stack: RunningStack) -> None:
    # Reproducers 1-3: snapshot and deploy waited 24 h for a killed worker, cleanup 10 min, and a
    # per-disk step retried forever.
    src, dst = inventories(stack, ["vm-a"], 4)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"])
        final = wait_final(api, m["id"])
        assert final["last_execution_status"] == "COMPLETED"
    # Reproducer 8: an empty scratch/<migration-id>/ folder was left behind (or the deployment's, on transfers).
    for action in (m["id"], *deployments_of(stack, final)):
        assert not (Path(stack.settings.scratch) / action).exists(), action
    scheduled = _scheduled(stack, m["id"])
    for name in ("snapshot_instance", "deploy_instance", "cleanup_instance"):
        assert scheduled.get(name), (name, sorted(scheduled))
    # A heartbeat timeout (0: none), the operator's: a killed worker is noticed within it. On transfers the
    # snapshot, a copy made in one call, heartbeats at least every 30 s.
    longest = max(stack.settings.heartbeat_timeout, LONG_CALL_HEARTBEAT)
    assert all(0 < hb <= longest for hb, _ in scheduled["snapshot_instance"]), scheduled["snapshot_instance"]
    for name in ("deploy_instance", "cleanup_instance"):
        assert {hb for hb, _ in scheduled[name]} == {stack.settings.heartbeat_timeout}, (name, scheduled[name])
    copies = [name for name in DISK_STEPS if name in scheduled]
    assert {"convert_disk", "upload_disk"} < set(copies) and len(copies) == 3, sorted(scheduled)
    for name in copies:
        # A maximum of attempts (0 would be unlimited), and no more than a migration's.
        assert all(0 < n <= DISK_ATTEMPTS for _, n in scheduled[name]), (name, scheduled[name])


def test_deterministic_disk_step_failure_ends_error_with_its_cause(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], 4)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 source_environment={"bandwidth_limit": 2 * 1024 * 1024})
        # A file where a disk step wants its folder: every attempt of it fails the same way. The one-shot
        # path's convert writes into convert/; on transfers, the replication keeps its checkpoint in replica/
        # (the convert of the deployment works in the deployment's own scratch space).
        workdir = Path(stack.settings.scratch) / m["id"] / "vm-a"
        workdir.mkdir(parents=True, exist_ok=True)
        failing = "REPLICATE_DISKS" if m["transfer_id"] else "CONVERT_DISKS"
        (workdir / ("replica" if m["transfer_id"] else "convert")).write_text("in the way")
        final = wait_final(api, m["id"], timeout=240)
    assert final["last_execution_status"] == "ERROR", final["tasks"]
    failed = task(final, "vm-a", failing)
    assert failed["status"] == "ERROR"
    assert "FileExistsError" in (failed["exception_details"] or ""), failed
    # Every attempt Temporal was allowed to make ran, and failed: bounded, as scheduled.
    [attempts] = {n for name in DISK_STEPS for _, n in _scheduled(stack, m["id"]).get(name, [])}
    assert 0 < attempts <= DISK_ATTEMPTS
    tried = [e["message"] for e in failed["events"] if e["message"].startswith("Attempt ")]
    assert f"Attempt {attempts} failed" in " ".join(tried), tried
    assert task(final, "vm-a", "CLEANUP_MIGRATION_RESOURCES")["status"] == "COMPLETED"
    assert not (dst / "vm-a").exists()


def test_convert_retried_after_a_kill_at_its_end_succeeds(stack: RunningStack, tmp_path: Path) -> None:
    # Reproducer 3: convert deleted its input before Temporal recorded it done, so every retry failed
    # with "Could not open .../export/disk-0.raw". Here the same attempt runs twice, as after that kill.
    src, dst = inventories(stack, ["vm-a"], 4)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"])
        final = wait_final(api, m["id"])
        assert final["last_execution_status"] == "COMPLETED"
    # The task the convert reports to: the migration's CONVERT_DISKS, or on transfers the deployment's
    # DEPLOY_INSTANCE_RESOURCES (shown as IMPORT_DISKS), where it flattens the replica's overlay.
    if m["transfer_id"]:
        [deployment] = deployments_of(stack, final)
        ref = TaskRef(migration_id=deployment, instance="vm-a", task_type=DeployTask.DEPLOY,
                      execution_id=task(final, "vm-a", "IMPORT_DISKS")["execution_id"])
    else:
        ref = TaskRef(migration_id=m["id"], instance="vm-a", task_type=TaskType.CONVERT)
    raw = tmp_path / "export" / "disk-0.raw"
    raw.parent.mkdir()
    raw.write_bytes((src / "vm-a" / "disk-0.raw").read_bytes())
    inp = DiskStepInput(
        step=StepInput(task=ref, origin_endpoint_id=origin, destination_endpoint_id=dest, workdir=str(tmp_path)),
        disk=DiskLocator(disk_id="disk-0", size_bytes=raw.stat().st_size, format="raw", path=str(raw)),
    )
    services = Services.create(stack.settings)
    activities = MigrationActivities(services)
    # Providers read the process's settings (the local roots): those of this stack, not of an earlier one.
    reset_settings()
    try:
        first = asyncio.run(ActivityEnvironment().run(activities.convert_disk, inp))
        again = asyncio.run(ActivityEnvironment().run(activities.convert_disk, inp))
    finally:
        services.store.db.dispose()
        reset_settings()
    assert again == first and first.format == "qcow2"
    assert identical(src / "vm-a" / "disk-0.raw", Path(first.path or ""))


def test_cleanup_removes_scratch_even_when_an_endpoint_became_unusable(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], 16)
    with stack.client() as api:
        m = start_slow_migration(api, src, dst, limit_mib=2)
        scratch = Path(stack.settings.scratch) / m["id"]
        assert scratch.exists()
        # An operator narrows the roots, or someone edits the endpoint: the provider now refuses it.
        api.update_endpoint(m["destination_endpoint_id"], connection_info={"path": "/etc"})
        api.cancel_migration(m["id"])
        final = wait_final(api, m["id"], timeout=120)
    cleanup = task(final, "vm-a", "CLEANUP_MIGRATION_RESOURCES")
    assert cleanup["status"] == "ERROR" and "not under an allowed root" in (cleanup["exception_details"] or ""), \
        (cleanup["status"], [e["message"] for e in cleanup["events"]])
    assert not scratch.exists(), "the scratch copy was left behind"
