"""The answers' shapes, as pydantic models: the OpenAPI document's response schemas, and every answer's mold.

``api/views.py`` and ``api/transfer_views.py`` gather a resource's fields and pass them through
:func:`answer`, once per resource: these models say what an answer holds, field by field, strictly
typed, and forbid any other field. A view that gains a field the document does not have, lacks one,
or gives one another type fails where it is built (a 500, loud in every test), instead of leaking.
A field that a view emits only on some routes (``tasks`` on a show, ``info`` with
``include_task_info``) is optional here, and left out of the answer when the view leaves it out.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


def answer(model: type[BaseModel], view: dict[str, Any]) -> dict[str, Any]:
    """``view`` checked against ``model`` and dumped from it, in the view's own key order.

    The views list their fields in Coriolis's order (what ``coriolis ... show -f json`` prints); the
    models group shared fields in base classes, which would reorder them. Values come from the model.
    """
    shaped: dict[str, Any] = _ordered(model.model_validate(view).model_dump(mode="json", exclude_unset=True), view)
    return shaped


def _ordered(dumped: Any, view: Any) -> Any:
    if isinstance(dumped, dict) and isinstance(view, dict):
        return {k: _ordered(dumped[k], view[k]) for k in view}
    if isinstance(dumped, list) and isinstance(view, list):
        return [_ordered(d, v) for d, v in zip(dumped, view, strict=True)]
    return dumped


class _View(BaseModel):
    # Strict: a view that hands over "3" for an int is a bug to see, not a value to coerce.
    model_config = ConfigDict(extra="forbid", strict=True)

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


class _Action(_View):
    """What a migration, a transfer and a deployment all are: instances moved between two endpoints."""

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
    last_execution_status: str | None
    source_environment: dict[str, Any]
    destination_environment: dict[str, Any]
    network_map: dict[str, Any]
    storage_mappings: dict[str, Any]
    user_scripts: dict[str, Any]
    skip_os_morphing: bool | None
    reservation_id: None


class MigrationView(_Action):
    """A migration (``/migrations``); ``tasks`` on a show and in ``detail`` lists."""

    status: str | None
    shutdown_instances: bool | None
    replication_count: int | None
    replica_id: None
    #: the transfer a migration runs as (``STERNA_MIGRATIONS_ON_TRANSFERS``), else null
    transfer_id: str | None
    clone_disks: bool
    transfer_result: dict[str, Any]
    executions: list[ExecutionView]
    tasks: list[TaskView] | None = None


class _TransferAction(_Action):
    """A transfer or a deployment of its replicas (Coriolis's ``BaseTransferAction``)."""

    base_id: str
    clone_disks: bool | None
    clustered: bool
    trust_id: str | None
    transfer_result: dict[str, Any] | None
    #: per instance, its task info and replica disks (``include_task_info``, and always on a show)
    info: dict[str, Any] | None = None


class TransferView(_TransferAction):
    """A transfer (``/transfers``, or ``/replicas`` for old clients)."""

    scenario: str | None
    executions: list[ExecutionView] | None = None


class DeploymentView(_TransferAction):
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
