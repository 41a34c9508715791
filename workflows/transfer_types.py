"""Models and task names of transfers and deployments.

Activity names live in ``activities.names`` and workflow ids in ``workflows.ids``, with the
migration's: each name that crosses the Temporal boundary is defined once.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from core.models import DiskLocator, InstanceInfo

# Re-exported: the record DB (below the workflows) writes these task names too.
from core.tasks import ON_ERROR_TASKS as ON_ERROR_TASKS
from core.tasks import DeployTask as DeployTask
from core.tasks import TransferTask as TransferTask
from core.tasks import deploy_tasks as deploy_tasks
from workflows.types import Status, StepInput, Timeouts

#: bytes per digest of a replica disk's chunk map: the granularity of incremental writes
REPLICA_CHUNK = 64 * 1024
#: bytes of each chunk digest in a replica map (XXH3-128, see diskio.digest)
DIGEST_SIZE = 16
#: formats of replica disks kept as a destination's snapshot (``path`` is its id), not as a local file:
#: a deployment reads them down before OS morphing, and writes its changes back as a child snapshot
SNAPSHOT_FORMATS = frozenset({"ebs-snapshot"})


class TransferExecutionInput(BaseModel):
    """Input of ``TransferExecutionWorkflow``; the plan itself is read from the record DB.

    A scheduled run has no ``execution_id``: its first activity creates the execution row.
    """

    transfer_id: str
    execution_id: str | None = None
    shutdown_instances: bool = False
    auto_deploy: bool = False
    timeouts: Timeouts = Field(default_factory=Timeouts)


class BeginExecution(BaseModel):
    transfer_id: str
    #: the id to give the execution when the workflow has to create it (scheduled runs)
    execution_id: str
    create: bool = False
    shutdown_instances: bool = False
    auto_deploy: bool = False
    workflow_id: str = ""


class ActionPlan(BaseModel):
    """What a transfer (or the deployment of one) is about, read from the record DB."""

    action_id: str
    execution_id: str
    transfer_id: str
    origin_endpoint_id: str
    destination_endpoint_id: str
    origin_type: str = ""
    instances: list[str]
    source_environment: dict[str, Any] = Field(default_factory=dict)
    destination_environment: dict[str, Any] = Field(default_factory=dict)
    network_map: dict[str, Any] = Field(default_factory=dict)
    storage_mappings: dict[str, Any] = Field(default_factory=dict)
    user_scripts: dict[str, Any] = Field(default_factory=dict)
    shutdown_instances: bool = False
    auto_deploy: bool = False
    skip_os_morphing: bool = False
    clone_disks: bool = True
    #: set when a scheduled run found the transfer busy: the run ends without an execution
    refused: str | None = None
    #: deployments: per instance, its export_info and replica disks
    export_info: dict[str, InstanceInfo] = Field(default_factory=dict)
    replicas: dict[str, list[DiskLocator]] = Field(default_factory=dict)


class InstancePlan(BaseModel):
    """Input of the per-instance child workflows."""

    plan: ActionPlan
    instance: str
    timeouts: Timeouts = Field(default_factory=Timeouts)


class ReplicaResult(BaseModel):
    disk: DiskLocator
    bytes_read: int = 0
    bytes_written: int = 0
    full_sync: bool = False


class FinishExecution(BaseModel):
    action_id: str
    execution_id: str
    status: Status


class DeploymentInput(BaseModel):
    """Input of ``DeploymentWorkflow``; the plan is read from the record DB."""

    deployment_id: str
    timeouts: Timeouts = Field(default_factory=Timeouts)


class AutoDeployment(BaseModel):
    transfer_id: str
    #: the transfer execution that deploys (Coriolis ``deployer_id``)
    execution_id: str
    deployment_id: str
    deployment_execution_id: str


class OverlayResult(BaseModel):
    disks: list[DiskLocator]
    host_queue: str
    workdir: str


class OverlayInput(BaseModel):
    """The copy-on-write views of one instance's replica disks, for a deployment."""

    step: StepInput
    disks: list[DiskLocator]
    #: False (``clone_disks: false``): deploy on the replica itself, which the deployment consumes
    clone: bool = True
    #: the transfer whose replica records a non-clone deployment marks as consumed
    transfer_id: str | None = None
