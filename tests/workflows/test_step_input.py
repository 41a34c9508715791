"""Workflow ids and step inputs are each built in one place, the same way for every caller."""

from __future__ import annotations

from types import SimpleNamespace

from workflows import ids
from workflows.types import MigrationInput, StepInput, TaskRef, TaskType

TASK = TaskRef(migration_id="m1", instance="vm-a", task_type=TaskType.CLEANUP)


def test_ids() -> None:
    assert ids.migration("m1") == "migration-m1"
    assert ids.instance("m1", "vm-a") == "migration-m1/vm-vm-a"
    assert ids.forced_cleanup("m1") == "migration-m1/forced-cleanup"
    assert ids.endpoint_call("e1", "validate", "n") == "endpoint-e1-validate-n"
    # transfers, executions, deployments and schedules: stored in histories and the record DB
    assert ids.execution("t1", "x1") == "transfer-t1/execution-x1"
    assert ids.execution_instance("x1", "vm-a") == "execution-x1/vm-vm-a"
    assert ids.deployment("d1") == "deployment-d1"
    assert ids.schedule("s1") == "transfer-schedule-s1"
    assert ids.forced_cleanup("t1", kind="transfer", execution_id="x1") == "transfer-t1/x1/forced-cleanup"


def test_workflow_and_forced_cleanup_build_the_same_step() -> None:
    options = dict(origin_endpoint_id="o", destination_endpoint_id="d", source_environment={"a": 1},
                   destination_environment={"b": 2}, network_map={"n": "br0"}, storage_mappings={"default": "x"},
                   shutdown_instances=True)
    inp = MigrationInput(migration_id="m1", project_id="p", origin_type="local", destination_type="local",
                         instances=["vm-a"], **options)
    from_workflow = StepInput.for_task(inp, TASK)
    # A record DB row has the same attributes (and may hold NULLs in its JSON columns).
    from_row = StepInput.for_task(SimpleNamespace(**options), TASK, workdir="/w")
    assert from_row == from_workflow.model_copy(update={"workdir": "/w"})
    # The environments stay the user's; the engine's options are fields of their own.
    assert from_workflow.source_environment == {"a": 1}
    assert from_workflow.destination_environment == {"b": 2}
    assert (from_workflow.network_map, from_workflow.storage_mappings) == ({"n": "br0"}, {"default": "x"})
    assert from_workflow.shutdown_instances is True
    empty = SimpleNamespace(**{**options, "network_map": None, "destination_environment": None})
    built = StepInput.for_task(empty, TASK)
    assert (built.destination_environment, built.network_map, built.storage_mappings) == ({}, {}, {"default": "x"})
