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
from tests.conftest import RunningStack, task, wait_final
from tests.helpers import endpoints, identical, inventories, start_slow_migration
from workflows.instance import DISK_ATTEMPTS
from workflows.types import DiskStepInput, StepInput, TaskRef, TaskType

pytestmark = pytest.mark.slow


def _scheduled(stack: RunningStack, workflow_id: str) -> dict[str, list[tuple[float, int]]]:
    """Activity name -> [(heartbeat timeout in s, maximum attempts)] as scheduled in the history."""

    async def read() -> dict[str, list[tuple[float, int]]]:
        client = await Client.connect(stack.settings.temporal_address, data_converter=pydantic_data_converter)
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        out: dict[str, list[tuple[float, int]]] = {}
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
        assert wait_final(api, m["id"])["last_execution_status"] == "COMPLETED"
    # Reproducer 8: an empty scratch/<migration-id>/ folder was left behind.
    assert not (Path(stack.settings.scratch) / m["id"]).exists()
    scheduled = _scheduled(stack, f"migration-{m['id']}/vm-vm-a")
    for name in ("snapshot_instance", "deploy_instance", "cleanup_instance"):
        assert [hb for hb, _ in scheduled[name]] == [stack.settings.heartbeat_timeout], (name, scheduled[name])
    for name in ("export_disk", "convert_disk", "upload_disk"):
        assert [n for _, n in scheduled[name]] == [DISK_ATTEMPTS], (name, scheduled[name])


def test_deterministic_disk_step_failure_ends_error_with_its_cause(stack: RunningStack) -> None:
    src, dst = inventories(stack, ["vm-a"], 4)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 source_environment={"bandwidth_limit": 2 * 1024 * 1024})
        # A file where convert wants its output folder: every attempt of convert fails the same way.
        workdir = Path(stack.settings.scratch) / m["id"] / "vm-a"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "convert").write_text("in the way")
        final = wait_final(api, m["id"], timeout=240)
    assert final["last_execution_status"] == "ERROR", final["tasks"]
    convert = task(final, "vm-a", "CONVERT_DISKS")
    assert convert["status"] == "ERROR"
    assert "FileExistsError" in (convert["exception_details"] or ""), convert
    attempts = [e["message"] for e in convert["events"] if e["message"].startswith("Attempt ")]
    assert f"Attempt {DISK_ATTEMPTS} failed" in " ".join(attempts), attempts
    assert task(final, "vm-a", "CLEANUP_MIGRATION_RESOURCES")["status"] == "COMPLETED"
    assert not (dst / "vm-a").exists()


def test_convert_retried_after_a_kill_at_its_end_succeeds(stack: RunningStack, tmp_path: Path) -> None:
    # Reproducer 3: convert deleted its input before Temporal recorded it done, so every retry failed
    # with "Could not open .../export/disk-0.raw". Here the same attempt runs twice, as after that kill.
    src, dst = inventories(stack, ["vm-a"], 4)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"])
        assert wait_final(api, m["id"])["last_execution_status"] == "COMPLETED"
    raw = tmp_path / "export" / "disk-0.raw"
    raw.parent.mkdir()
    raw.write_bytes((src / "vm-a" / "disk-0.raw").read_bytes())
    inp = DiskStepInput(
        step=StepInput(task=TaskRef(migration_id=m["id"], instance="vm-a", task_type=TaskType.CONVERT),
                       origin_endpoint_id=origin, destination_endpoint_id=dest, workdir=str(tmp_path)),
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
    assert cleanup["status"] == "ERROR" and "not under an allowed root" in (cleanup["exception_details"] or "")
    assert not scratch.exists(), "the scratch copy was left behind"
