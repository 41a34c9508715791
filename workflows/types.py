"""Pydantic models that cross the Temporal boundary, plus task names and statuses.

Every workflow and activity takes exactly one of these models; new fields always get
defaults so that running executions keep replaying.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, Field

from core.models import DeployedInstance, DiskLocator, ImportedDisk, InstanceInfo, SourceSnapshot

# Re-exported: workflows, activities and the API read statuses from here with the other types.
from core.statuses import FINAL_STATUSES as FINAL_STATUSES
from core.statuses import Status as Status


class TaskType(StrEnum):
    """One Coriolis task per migration step, per instance, in execution order."""

    VALIDATE = "VALIDATE_MIGRATION_INPUTS"
    SNAPSHOT = "CREATE_SOURCE_SNAPSHOT"
    EXPORT = "REPLICATE_DISKS"
    OS_MORPHING = "OS_MORPHING"
    CONVERT = "CONVERT_DISKS"
    UPLOAD = "IMPORT_DISKS"
    BOOT = "DEPLOY_INSTANCE_RESOURCES"
    CLEANUP = "CLEANUP_MIGRATION_RESOURCES"


TASK_ORDER: list[TaskType] = list(TaskType)


class Timeouts(BaseModel):
    """Activity timing, in seconds; chosen by the API from settings at create time."""

    heartbeat: float = 30.0
    transfer: float = 24 * 3600.0
    short: float = 600.0
    host_schedule_to_start: float = 3600.0
    retry_max_interval: float = 30.0


class MigrationInput(BaseModel):
    """Input of ``MigrationWorkflow``. Carries ids and options, never credentials."""

    migration_id: str
    project_id: str
    origin_endpoint_id: str
    destination_endpoint_id: str
    origin_type: str
    destination_type: str
    instances: list[str]
    source_environment: dict[str, Any] = Field(default_factory=dict)
    destination_environment: dict[str, Any] = Field(default_factory=dict)
    network_map: dict[str, Any] = Field(default_factory=dict)
    storage_mappings: dict[str, Any] = Field(default_factory=dict)
    user_scripts: dict[str, Any] = Field(default_factory=dict)
    skip_os_morphing: bool = False
    shutdown_instances: bool = False
    timeouts: Timeouts = Field(default_factory=Timeouts)


class InstanceInput(BaseModel):
    """Input of ``InstanceMigrationWorkflow``: one VM of a migration."""

    migration: MigrationInput
    instance: str


class TaskRef(BaseModel):
    #: the action (migration, transfer or deployment) the task belongs to
    migration_id: str
    instance: str
    #: a ``TaskType`` or a ``workflows.transfer_types.TransferTask`` value
    task_type: str
    #: set for transfers, whose executions repeat the same task types
    execution_id: str | None = None


class MigrationPlan(Protocol):
    """What a step input is built from: a ``MigrationInput``, or a migration row of the record DB."""

    @property
    def origin_endpoint_id(self) -> str: ...
    @property
    def destination_endpoint_id(self) -> str: ...
    @property
    def source_environment(self) -> dict[str, Any]: ...
    @property
    def destination_environment(self) -> dict[str, Any]: ...
    @property
    def network_map(self) -> dict[str, Any]: ...
    @property
    def storage_mappings(self) -> dict[str, Any]: ...
    @property
    def shutdown_instances(self) -> bool: ...


class StepInput(BaseModel):
    """Input shared by every per-instance step activity. Build it with ``for_task``."""

    task: TaskRef
    origin_endpoint_id: str
    destination_endpoint_id: str
    source_environment: dict[str, Any] = Field(default_factory=dict)
    destination_environment: dict[str, Any] = Field(default_factory=dict)
    export_info: InstanceInfo | None = None
    snapshot: SourceSnapshot | None = None
    #: per-instance scratch directory on the pinned host
    workdir: str | None = None
    #: validation then skips the checks that only OS morphing needs (Windows drivers)
    skip_os_morphing: bool = False
    # The engine's own options travel beside the user's environments, never inside them (inputs
    # recorded before these fields had them in the environments: ``activities.context`` reads both).
    #: Coriolis ``network_map`` and ``storage_mappings`` of the action
    network_map: dict[str, Any] = Field(default_factory=dict)
    storage_mappings: dict[str, Any] = Field(default_factory=dict)
    #: shut the source instance down before its snapshot
    shutdown_instances: bool = False
    #: a transfer id: the snapshot also tracks changes for that transfer's next execution
    change_tracking: str | None = None
    #: a transfer execution writes replica disks only: no instance is deployed
    replica_only: bool = False

    @classmethod
    def for_task(cls, plan: MigrationPlan, task: TaskRef, **known: Any) -> StepInput:
        """The one place that builds a step's input from an action's options.

        ``known`` is what earlier steps found (``export_info``, ``snapshot``, ``workdir``).
        The environments stay the user's, as given.
        """
        return cls(
            task=task,
            origin_endpoint_id=plan.origin_endpoint_id,
            destination_endpoint_id=plan.destination_endpoint_id,
            source_environment=dict(plan.source_environment or {}),
            destination_environment=dict(plan.destination_environment or {}),
            skip_os_morphing=bool(getattr(plan, "skip_os_morphing", False)),
            network_map=dict(plan.network_map or {}),
            storage_mappings=dict(plan.storage_mappings or {}),
            shutdown_instances=bool(plan.shutdown_instances),
            **known,
        )


class ValidateResult(BaseModel):
    export_info: InstanceInfo


class SnapshotResult(BaseModel):
    snapshot: SourceSnapshot
    host_queue: str
    workdir: str


def probe_queue(host_queue: str) -> str:
    """The queue on which the worker of ``host_queue``'s host answers ``HOST_ALIVE`` (``workflows.hosts``)."""
    return f"{host_queue}-probe"


class HostProbe(BaseModel):
    """Input of ``HOST_ALIVE``: is a worker of this host's queue alive, whatever its disk slots do?"""

    queue: str


class DiskStepInput(BaseModel):
    step: StepInput
    disk: DiskLocator
    #: convert even to the same format (a deployment's qcow2 overlay becomes a standalone image)
    flatten: bool = False
    #: a replication: how many times its instance moved off a lost host to a new snapshot
    #: (``workflows.failover``). From the first, an earlier attempt of the execution may have
    #: written the replica from another snapshot than this one.
    failovers: int = 0


class DiskStepResult(BaseModel):
    disk: DiskLocator
    bytes_read: int = 0
    bytes_written: int = 0
    resumed_bytes: int = 0


class MorphInput(BaseModel):
    step: StepInput
    disks: list[DiskLocator]
    skip: bool = False
    user_scripts: dict[str, Any] = Field(default_factory=dict)
    origin_type: str = ""


class MorphResult(BaseModel):
    disks: list[DiskLocator]
    #: OS morphing found a bootable OS (a kernel): the boot check runs by default
    bootable: bool = False


class UploadResult(BaseModel):
    disk: ImportedDisk


class DeployInput(BaseModel):
    step: StepInput
    disks: list[ImportedDisk]
    bootable: bool = False


class CleanupInput(BaseModel):
    step: StepInput
    disks: list[ImportedDisk] = Field(default_factory=list)
    deployed: DeployedInstance | None = None
    succeeded: bool = False


class TaskUpdate(BaseModel):
    """Workflow-side record of a task's fate (statuses the activity itself can't set)."""

    task: TaskRef
    status: Status
    message: str | None = None


class MigrationStatusUpdate(BaseModel):
    migration_id: str
    status: Status
    message: str | None = None


class Heartbeat(BaseModel):
    """What transfer activities heartbeat: shown by ``temporal workflow describe``."""

    bytes_done: int
    bytes_total: int
    checkpoint: list[tuple[int, int]] = Field(default_factory=list)
    #: the boot id of the host that heartbeated: ``checkpoint`` names bytes written, not synced, which
    #: hold only while that boot's page cache does (see ``diskio.checkpoint``); empty before it was sent
    boot: str = ""


class EndpointCall(BaseModel):
    """A provider endpoint call (validate, inventory...) run by a worker for the API."""

    endpoint_id: str
    operation: str
    env: dict[str, Any] = Field(default_factory=dict)
    instance: str | None = None
    name_filter: str | None = None
    #: a short-lived Keystone trust for Barbican/same-cloud endpoints (an id, never a token)
    trust_id: str | None = None


class TrustRelease(BaseModel):
    """Delete a migration's Keystone trust once its workflow has ended."""

    migration_id: str


class ForcedCleanup(BaseModel):
    """After a force-cancel (terminate), what is known of each instance, from the record DB."""

    items: list[CleanupInput]
    queues: list[str]
    #: heartbeat timeout of each cleanup, seconds (the default is for inputs recorded before it)
    heartbeat: float = 30.0
