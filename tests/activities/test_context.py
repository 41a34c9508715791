"""What a provider gets from a step: the user's environments as given, and the engine's values typed."""

from __future__ import annotations

from activities.context import action_context, dest_env, shutdown_requested, source_env
from core.models import CHANGE_TRACKING, InstanceInfo
from providers.aws import tags as aws_tags
from providers.azure import tags as azure_tags
from providers.base import NO_ACTION, ActionContext
from workflows.types import MigrationInput, StepInput, TaskRef, TaskType

INFO = InstanceInfo(id="i-1", name="web01", num_cpu=1, memory_mb=512)


def _step(**known: object) -> StepInput:
    plan = MigrationInput(
        migration_id="m1", project_id="p", origin_endpoint_id="o", destination_endpoint_id="d", origin_type="local",
        destination_type="local", instances=["vm-a"], source_environment={"a": 1},
        destination_environment={"flavor_name": "small"}, network_map={"VM Network": "br0"},
        storage_mappings={"default": "gp3"}, shutdown_instances=True,
    )
    task = TaskRef(migration_id="m1", instance="vm-a", task_type=TaskType.UPLOAD, execution_id="x1")
    return StepInput.for_task(plan, task, **known)


def test_the_engine_values_leave_the_environments_for_the_context() -> None:
    step = _step(export_info=INFO)
    assert source_env(step) == {"a": 1} and dest_env(step) == {"flavor_name": "small"}
    action = action_context(step, "p")
    # source_name: the export info's, which a destination's marks and its cleanup's searches carry.
    assert action == ActionContext(action_id="m1", instance="vm-a", execution_id="x1", instance_name="web01",
                                   source_name=INFO.name, project_id="p", network_map={"VM Network": "br0"},
                                   storage_mappings={"default": "gp3"})
    assert shutdown_requested(step)
    # The engine's values never enter the user's environments.
    assert "network_map" not in step.destination_environment and "shutdown_instances" not in step.source_environment


def test_a_step_scheduled_before_the_fields_still_gives_its_values() -> None:
    # Such a step had the engine's values inside its environments (a workflow running at an upgrade).
    new = _step()
    old = StepInput(task=new.task, origin_endpoint_id="o", destination_endpoint_id="d",
                    source_environment={"a": 1, "shutdown_instances": True, CHANGE_TRACKING: "t1"},
                    destination_environment={"flavor_name": "small", "network_map": {"VM Network": "br0"},
                                             "storage_mappings": {"default": "gp3"}, "replica_only": True})
    assert source_env(old) == {"a": 1} and dest_env(old) == {"flavor_name": "small"}
    assert shutdown_requested(old)
    action = action_context(old)
    assert (action.network_map, action.storage_mappings) == ({"VM Network": "br0"}, {"default": "gp3"})
    assert (action.change_tracking, action.replica_only) == ("t1", True)


def test_a_transfer_step_tracks_changes_and_writes_replicas_only() -> None:
    step = _step()
    # What workflows.transfer sets on the step of an execution.
    step.change_tracking, step.replica_only = "t1", True
    action = action_context(step)
    assert (action.change_tracking, action.replica_only, action.instance_name) == ("t1", True, None)


def test_a_name_the_user_chose_names_the_destination_instance() -> None:
    step = _step(export_info=INFO)
    step.destination_environment["instance_name"] = "web01-migrated"
    assert action_context(step).instance_name == "web01-migrated"


def test_tags_keep_their_names_on_each_cloud() -> None:
    action = ActionContext(action_id="m1")
    assert aws_tags.action_tags(action) == {"sterna:migration-id": "m1"}
    assert azure_tags.action_tags(action) == {"sterna-migration-id": "m1"}
    assert aws_tags.action_tags(NO_ACTION) == {} == azure_tags.action_tags(NO_ACTION)
