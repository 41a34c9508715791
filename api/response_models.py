"""The answers' shapes, as pydantic models: the OpenAPI document's response schemas.

``api/views.py`` and ``api/transfer_views.py`` build the answers; these models say what they hold,
field by field, and forbid any other field, so that a view that gains a field without the document
fails the checks that read answers against it (schemathesis in tests/api/test_openapi.py, the
recorded samples in tests/api/test_api_samples.py). A field that a view emits only on some routes
(``tasks`` on a show, ``info`` with ``include_task_info``) is optional here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    created_at: str | None
    updated_at: str | None
    deleted_at: str | None
    #: Coriolis's soft-delete flag, a string: "0" or "1"
    deleted: str


class EndpointView(_View):
    """An endpoint; credential-looking values of ``connection_info`` are shown as ``***``."""

    user_id: str | None
    project_id: str | None
    name: str
    type: str
    description: str | None
    connection_info: dict[str, Any]
    mapped_regions: list[str]


class EventView(_View):
    task_id: str
    level: str
    index: int
    message: str


class ProgressUpdateView(_View):
    task_id: str
    index: int
    current_step: int
    total_steps: int | None
    message: str | None


class TaskView(_View):
    """One Coriolis task: a step of one instance, with its events and progress."""

    execution_id: str
    instance: str
    host: str | None
    process_id: int | None
    status: str
    task_type: str
    exception_details: str | None
    depends_on: list[str]
    index: int
    on_error: bool
    events: list[EventView]
    progress_updates: list[ProgressUpdateView]


class ExecutionView(_View):
    """An execution of a transfer, migration or deployment; ``tasks`` on a show and in ``detail`` lists."""

    action_id: str
    status: str
    number: int
    type: str
    tasks: list[TaskView] | None = None


class DisksDeletedView(ExecutionView):
    """The ``delete-disks`` action's execution, done when it answers: what it removed, or could not."""

    removed: list[str]


class MigrationView(_View):
    """A migration (``/migrations``); ``tasks`` on a show and in ``detail`` lists."""

    user_id: str | None
    project_id: str | None
    type: str
    origin_endpoint_id: str | None
    destination_endpoint_id: str | None
    origin_minion_pool_id: None
    destination_minion_pool_id: None
    instance_osmorphing_minion_pool_mappings: dict[str, Any]
    instances: list[str]
    notes: str | None
    status: str | None
    last_execution_status: str | None
    source_environment: dict[str, Any]
    destination_environment: dict[str, Any]
    network_map: dict[str, Any]
    storage_mappings: dict[str, Any]
    user_scripts: dict[str, Any]
    shutdown_instances: bool | None
    skip_os_morphing: bool | None
    replication_count: int | None
    replica_id: None
    transfer_id: None
    reservation_id: None
    clone_disks: bool
    transfer_result: dict[str, Any]
    executions: list[ExecutionView]
    tasks: list[TaskView] | None = None


class _ActionView(_View):
    base_id: str
    user_id: str | None
    project_id: str | None
    origin_endpoint_id: str | None
    destination_endpoint_id: str | None
    origin_minion_pool_id: None
    destination_minion_pool_id: None
    instance_osmorphing_minion_pool_mappings: dict[str, Any]
    instances: list[str]
    notes: str | None
    last_execution_status: str | None
    source_environment: dict[str, Any]
    destination_environment: dict[str, Any]
    network_map: dict[str, Any]
    storage_mappings: dict[str, Any]
    user_scripts: dict[str, Any]
    clone_disks: bool | None
    skip_os_morphing: bool | None
    clustered: bool
    reservation_id: None
    trust_id: str | None
    transfer_result: dict[str, Any] | None
    type: str
    #: per instance, its task info and replica disks (``include_task_info``, and always on a transfer's show)
    info: dict[str, Any] | None = None


class TransferView(_ActionView):
    """A transfer (``/transfers``, or ``/replicas`` for old clients)."""

    scenario: str | None
    executions: list[ExecutionView] | None = None


class DeploymentView(_ActionView):
    """A deployment of a transfer's replicas; ``tasks`` on a show and in ``detail`` lists."""

    transfer_id: str | None
    replica_id: str | None
    transfer_scenario_type: str | None
    deployer_id: str | None
    shutdown_instances: bool | None
    executions: list[ExecutionView]
    tasks: list[TaskView] | None = None


class ScheduleView(_View):
    """A transfer's schedule: Coriolis's cron fields, as Temporal Schedule ``transfer-schedule-<id>`` runs them."""

    transfer_id: str
    replica_id: str
    schedule: dict[str, Any]
    expiration_date: str | None
    enabled: bool
    shutdown_instance: bool
    auto_deploy: bool
    trust_id: None


VIEWS: tuple[type[BaseModel], ...] = (EndpointView, EventView, ProgressUpdateView, TaskView, ExecutionView,
                                      DisksDeletedView, MigrationView, TransferView, DeploymentView, ScheduleView)
