"""``AwsProvider``: the Sterna provider for Amazon EC2/EBS (source and destination).

Control-plane methods are synchronous boto3 calls; ``import_disk`` is async and moves
bytes with the EBS direct APIs. Failures surface as ``core.errors`` through
``providers.aws.errors``; nothing here logs or raises the secret key.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from core.errors import NotFound
from core.models import (
    DeployedInstance,
    DiskLocator,
    ImportedDisk,
    InstanceInfo,
    NetworkInfo,
    OptionValues,
    SourceSnapshot,
    StorageInfo,
)
from diskio.base import DiskSource, DiskTarget, Extent
from providers.aws import chain, delta, deploy, flavors, importer, instances, options, replica, source
from providers.aws import cleanup as cleanup_mod
from providers.aws.ebs import EBS_BLOCK_SIZE
from providers.aws.mapping import VOLUME_TYPES, plan_nics, volume_type_for
from providers.aws.session import CONNECTION_INFO_SCHEMA, AwsClients, AwsConnection
from providers.base import (
    NO_ACTION,
    ActionContext,
    BootVerifier,
    ChangeTrackingSource,
    DestinationOptionsProvider,
    EndpointProvider,
    ExportProvider,
    ImportProvider,
    NetworksProvider,
    SnapshotReplicaProvider,
    SourceOptionsProvider,
    StorageProvider,
    TransferContext,
)

_NETWORK_ENTRY = {
    "oneOf": [
        {"type": "string", "description": "subnet id or Name tag"},
        {
            "type": "object",
            "properties": {
                "subnet_id": {"type": "string"},
                "security_group_ids": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["subnet_id"],
        },
    ]
}

DESTINATION_SCHEMA: dict[str, Any] = {
    "$schema": "http://cloudbase.it/coriolis/schemas/aws_destination_env#",
    "type": "object",
    "properties": {
        "region": {"type": "string", "description": "overrides the endpoint's region"},
        "flavor_name": {"type": "string", "description": "instance type; default: smallest that fits"},
        "network_map": {"type": "object", "additionalProperties": _NETWORK_ENTRY},
        "security_group_ids": {"type": "array", "items": {"type": "string"}},
        "storage_mappings": {"type": "object"},
        "volume_type": {"type": "string", "enum": list(VOLUME_TYPES)},
        "keypair_name": {"type": "string"},
        "architecture": {"type": "string", "enum": ["x86_64", "arm64"], "default": "x86_64"},
        "keep_image": {"type": "boolean", "default": False},
        "snapshot_timeout_minutes": {"type": "integer", "minimum": 10, "maximum": 4320},
        "verify_upload": {
            "type": "boolean",
            "default": True,
            "description": "read each completed snapshot back and compare it with the converted disk",
        },
    },
    "required": ["network_map"],
}

SOURCE_SCHEMA: dict[str, Any] = {
    "$schema": "http://cloudbase.it/coriolis/schemas/aws_source_env#",
    "type": "object",
    "properties": {"region": {"type": "string"}, "shutdown_instance": {"type": "boolean", "default": False}},
}


class AwsProvider(
    EndpointProvider,
    ExportProvider,
    ImportProvider,
    NetworksProvider,
    StorageProvider,
    DestinationOptionsProvider,
    SourceOptionsProvider,
    BootVerifier,
    ChangeTrackingSource,
    SnapshotReplicaProvider,
):
    """Amazon EC2/EBS endpoint: inventory, EBS-direct export and import, AMI + instance deploy."""

    PLUGIN_NAME = "aws"
    #: replica chunks are whole EBS blocks: each changed one is one PutSnapshotBlock
    REPLICA_CHUNK = EBS_BLOCK_SIZE
    TARGET_DISK_FORMAT = "raw"
    TARGET_PLATFORM = "aws"
    #: seconds between status polls in ``verify_boot``
    boot_poll_interval: ClassVar[float] = 10.0
    #: if set, overrides every waiter's poll delay and the boot poll interval (for fast peers)
    poll_delay: ClassVar[float | None] = None

    def __init__(self, connection_info: Mapping[str, Any]) -> None:
        super().__init__(connection_info)
        self._lock = threading.Lock()
        self._root: AwsClients | None = None
        self._conn: AwsConnection | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def _clients(self, env: Mapping[str, Any] | None = None) -> AwsClients:
        """Clients for the env's region (``env["region"]``) or the endpoint's."""
        with self._lock:
            if self._conn is None:
                self._conn = AwsConnection.from_info(self.connection_info)
            if self._root is None:
                self._root = AwsClients(self._conn)
                self._root.poll_delay = self.poll_delay
        region = str((env or {}).get("region") or self._conn.region)
        return self._root.in_region(region)

    @classmethod
    def connection_info_schema(cls) -> dict[str, Any]:
        return CONNECTION_INFO_SCHEMA

    @classmethod
    def destination_environment_schema(cls) -> dict[str, Any]:
        return DESTINATION_SCHEMA

    @classmethod
    def source_environment_schema(cls) -> dict[str, Any]:
        return SOURCE_SCHEMA

    # -- endpoint ---------------------------------------------------------------------------

    def validate_connection(self) -> None:
        """Credentials accepted, region known and enabled, EC2 reachable."""
        options.validate_connection(self._clients())

    def list_networks(self, env: Mapping[str, Any]) -> list[NetworkInfo]:
        return options.list_networks(self._clients(env))

    def list_storage(self, env: Mapping[str, Any]) -> StorageInfo:
        return options.list_storage()

    def destination_options(self, env: Mapping[str, Any]) -> list[OptionValues]:
        return options.options(self._clients(env), destination=True)

    def source_options(self, env: Mapping[str, Any]) -> list[OptionValues]:
        return options.options(self._clients(env), destination=False)

    # -- inventory --------------------------------------------------------------------------

    def _type_info(self, clients: AwsClients, name: str | None) -> dict[str, Any] | None:
        if not name:
            return None
        return flavors.describe_type(clients.ec2, name, clients.conn.secrets)

    def list_instances(self, env: Mapping[str, Any], name_filter: str | None = None) -> list[InstanceInfo]:
        """Instances (not terminated) and the account's AMIs, optionally filtered by name substring."""
        clients = self._clients(env)
        raw_instances, raw_images = instances.list_raw(clients.ec2, clients.conn.secrets)
        types: dict[str, dict[str, Any] | None] = {}
        result = []
        for raw in raw_instances:
            itype = raw.get("InstanceType", "")
            if itype not in types:
                types[itype] = self._type_info(clients, itype)
            result.append(instances.instance_info(clients.ec2, raw, types[itype], clients.conn.secrets))
        result.extend(instances.image_info(raw) for raw in raw_images)
        if name_filter:
            result = [i for i in result if name_filter in i.name or name_filter in i.id]
        return result

    def get_instance(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        """An instance by id or Name tag, or an AMI by id or name; ``NotFound`` otherwise."""
        clients = self._clients(env)
        secrets = clients.conn.secrets
        if instance.startswith("ami-"):
            return instances.image_info(instances.describe_image_raw(clients.ec2, instance, secrets))
        try:
            raw = instances.describe_instance_raw(clients.ec2, instance, secrets)
        except NotFound:
            if instance.startswith("i-"):
                raise
            return instances.image_info(instances.describe_image_raw(clients.ec2, instance, secrets))
        return instances.instance_info(
            clients.ec2, raw, self._type_info(clients, raw.get("InstanceType")), secrets
        )

    # -- source -----------------------------------------------------------------------------

    def shutdown_instance(self, env: Mapping[str, Any], instance: str) -> None:
        source.shutdown_instance(self._clients(env), instance)

    def snapshot_instance(self, env: Mapping[str, Any], instance: str, workdir: Path,
                          action: ActionContext = NO_ACTION) -> SourceSnapshot:
        clients = self._clients(env)
        if env.get("shutdown_instance"):
            source.shutdown_instance(clients, instance)
        return source.snapshot_instance(clients, instance, workdir, action)

    def open_disk(self, snapshot: SourceSnapshot, disk: DiskLocator) -> DiskSource:
        # The snapshot lives in the region it was taken in, which env may have overridden.
        return source.open_disk(self._clients({"region": snapshot.details.get("region")}), disk)

    def changed_extents(self, snapshot: SourceSnapshot, disk: DiskLocator, marker: str) -> list[Extent] | None:
        if not disk.details.get("change_marker"):
            return None  # an AMI's snapshots: not a chain this transfer took
        return source.changed_extents(self._clients({"region": snapshot.details.get("region")}), disk, marker)

    # -- replica disks (transfers) ------------------------------------------------------------
    def start_replica_snapshot(self, env: Mapping[str, Any], transfer_id: str, instance: str, disk_id: str,
                               size_bytes: int, parent: str | None,
                               execution_id: str | None = None) -> tuple[str, DiskTarget]:
        return replica.start(self._clients(env), transfer_id, instance, disk_id, size_bytes, parent, execution_id)

    def pending_replica_snapshot(self, env: Mapping[str, Any], transfer_id: str, instance: str, disk_id: str,
                                 size_bytes: int, parent: str | None,
                                 execution_id: str) -> tuple[str, DiskTarget] | None:
        return replica.pending(self._clients(env), transfer_id, instance, disk_id, size_bytes, parent, execution_id)

    def discard_replica_snapshot(self, env: Mapping[str, Any], snapshot_id: str) -> None:
        replica.discard(self._clients(env), snapshot_id)

    def delete_replica_disks(self, env: Mapping[str, Any], transfer_id: str) -> list[str]:
        return replica.delete_all(self._clients(env), transfer_id)

    def open_replica_snapshot(self, env: Mapping[str, Any], snapshot_id: str, size_bytes: int) -> DiskSource:
        return chain.open_chain(self._clients(env), snapshot_id, size_bytes)

    async def import_replica_delta(self, env: Mapping[str, Any], export_info: InstanceInfo, disk: DiskLocator,
                                   view: DiskSource | None, changed: list[Extent], ctx: TransferContext,
                                   action: ActionContext = NO_ACTION) -> ImportedDisk:
        parent = str(disk.details["replica_snapshot"])
        # Off the event loop: making boto3 clients loads their service models (seconds on a busy host).
        clients = await asyncio.to_thread(self._clients, env)
        return await delta.import_delta(clients, env, export_info, disk, parent, view, changed, ctx, action)

    def release_tracking(self, env: Mapping[str, Any], instance: str, transfer_id: str) -> list[str]:
        return source.release_tracking(self._clients(env), transfer_id) if transfer_id else []

    def delete_snapshot(self, snapshot: SourceSnapshot) -> None:
        source.delete_snapshot(self._clients({"region": snapshot.details.get("region")}), snapshot)

    # -- destination ------------------------------------------------------------------------

    def validate_destination(self, env: Mapping[str, Any], export_info: InstanceInfo,
                             action: ActionContext = NO_ACTION) -> None:
        """Connection, instance type, subnets, security groups and volume types, before any copy."""
        clients = self._clients(env)
        options.validate_connection(clients)
        deploy.choose_instance_type(clients, env, export_info)
        plan_nics(clients.ec2, env, action.network_map, export_info, clients.conn.secrets)
        for disk in export_info.devices.disks or [None]:  # type: ignore[list-item]
            volume_type_for(env, action.storage_mappings, disk)

    async def import_disk(
        self,
        env: Mapping[str, Any],
        export_info: InstanceInfo,
        disk: DiskLocator,
        ctx: TransferContext,
        action: ActionContext = NO_ACTION,
    ) -> ImportedDisk:
        clients = await asyncio.to_thread(self._clients, env)  # off the loop, as above
        return await importer.import_disk(clients, env, export_info, disk, ctx, action)

    def deploy_instance(
        self, env: Mapping[str, Any], export_info: InstanceInfo, disks: list[ImportedDisk],
        action: ActionContext = NO_ACTION,
    ) -> DeployedInstance:
        return deploy.deploy_instance(self._clients(env), env, export_info, disks, action)

    def verify_boot(self, env: Mapping[str, Any], deployed: DeployedInstance, timeout: float,
                    on_stage: Callable[[str], None] | None = None) -> list[str]:
        # on_stage: this check polls status checks and returns their lines at the end; no stages yet.
        return deploy.verify_boot(
            self._clients(env), deployed, timeout, poll=self.poll_delay or self.boot_poll_interval
        )

    def cleanup(
        self,
        env: Mapping[str, Any],
        instance: str,
        disks: list[ImportedDisk],
        deployed: DeployedInstance | None,
        succeeded: bool,
        action: ActionContext = NO_ACTION,
    ) -> list[str]:
        return cleanup_mod.cleanup(self._clients(env), env, disks, deployed, succeeded, action.action_id,
                                   action.source_name)
