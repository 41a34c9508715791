"""``AzureProvider``: Azure (and Azure Stack Hub) as a migration destination.

Control-plane calls are the Azure SDKs' synchronous clients; ``import_disk`` is async and
moves bytes through the disk engine into a managed disk created for upload (see
``importer``). Failures surface as ``core.errors`` through ``providers.azure.errors``;
nothing here logs or raises the client secret or a SAS token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from core.models import (
    DeployedInstance,
    DiskLocator,
    ImportedDisk,
    InstanceInfo,
    NetworkInfo,
    OptionValues,
    SourceSnapshot,
)
from diskio.base import DiskSource
from providers.azure import cleanup as cleanup_mod
from providers.azure import deploy, importer, source
from providers.azure.errors import azure_errors
from providers.azure.session import CONNECTION_INFO_SCHEMA, AzureClients, AzureConnection
from providers.base import (
    NO_ACTION,
    ActionContext,
    DestinationOptionsProvider,
    EndpointProvider,
    ExportProvider,
    ImportProvider,
    NetworksProvider,
    TransferContext,
)
from providers.replica_store import StoredReplicas

_NETWORK_ENTRY = {
    "oneOf": [
        {"type": "string", "description": "subnet resource id"},
        {
            "type": "object",
            "properties": {"subnet_id": {"type": "string"}, "network_security_group_id": {"type": "string"}},
            "required": ["subnet_id"],
        },
    ]
}

DESTINATION_SCHEMA: dict[str, Any] = {
    "$schema": "http://cloudbase.it/coriolis/schemas/azure_destination_env#",
    "type": "object",
    "properties": {
        "vm_size": {"type": "string", "description": "e.g. Standard_D2s_v3; default: smallest that fits"},
        "flavor_name": {"type": "string", "description": "alias of vm_size"},
        "vm_name": {"type": "string"},
        "network_map": {"type": "object", "additionalProperties": _NETWORK_ENTRY},
        "network_security_group_id": {"type": "string", "description": "NSG for every NIC without its own"},
        "verify_upload": {"type": "boolean", "default": True,
                          "description": "read every uploaded range back through the SAS and compare it"},
    },
    "required": ["network_map"],
}


class AzureProvider(EndpointProvider, ExportProvider, ImportProvider, NetworksProvider, DestinationOptionsProvider,
                    StoredReplicas):
    """Azure Resource Manager endpoint: managed-disk direct upload, NIC + VM deploy; VM export from
    incremental snapshots read through a SAS. A transfer's replica disks are in Sterna's replica store
    (``providers.replica_store``): a managed disk takes writes only while it is uploaded."""

    PLUGIN_NAME = "azure"
    #: qemu-img's name for VHD; ``TARGET_DISK_OPTIONS`` makes it the fixed VHD Azure takes
    TARGET_DISK_FORMAT = "vpc"
    TARGET_DISK_OPTIONS: ClassVar[list[str]] = ["subformat=fixed", "force_size=on"]
    TARGET_PLATFORM = "azure"
    CHECKS_AT_CREATE = True

    def __init__(self, connection_info: Mapping[str, Any]) -> None:
        super().__init__(connection_info)
        self._lock = threading.Lock()
        self._clients: AzureClients | None = None

    def clients(self) -> AzureClients:
        with self._lock:
            if self._clients is None:
                self._clients = AzureClients(AzureConnection.from_info(self.connection_info))
            return self._clients

    @classmethod
    def connection_info_schema(cls) -> dict[str, Any]:
        return CONNECTION_INFO_SCHEMA

    @classmethod
    def destination_environment_schema(cls) -> dict[str, Any]:
        return DESTINATION_SCHEMA

    # -- endpoint ---------------------------------------------------------------------------

    def validate_connection(self) -> None:
        """Token from the authority, then subscription, role and resource group, then the location."""
        clients = self.clients()
        conn = clients.conn
        with azure_errors("getting a token for the service principal", conn.secrets):
            clients.credential.get_token(conn.scope)
        with azure_errors(f"listing virtual machines in resource group {conn.resource_group}", conn.secrets):
            next(iter(clients.compute.virtual_machines.list(conn.resource_group)), None)
        deploy.vm_sizes(clients)

    def list_networks(self, env: Mapping[str, Any]) -> list[NetworkInfo]:
        clients = self.clients()
        with azure_errors("listing virtual networks", clients.conn.secrets):
            vnets = list(clients.network.virtual_networks.list_all())
        return [NetworkInfo(id=str(s.id), name=f"{v.name}/{s.name}") for v in vnets for s in (v.subnets or [])]

    def destination_options(self, env: Mapping[str, Any]) -> list[OptionValues]:
        clients = self.clients()
        sizes = sorted(s.name for s in deploy.vm_sizes(clients))
        return [OptionValues(name="vm_size", values=sizes),
                OptionValues(name="location", values=[clients.conn.location], config_default=clients.conn.location)]

    # -- source -------------------------------------------------------------------------------

    def list_instances(self, env: Mapping[str, Any], name_filter: str | None = None) -> list[InstanceInfo]:
        return source.list_instances(self.clients(), name_filter)

    def get_instance(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        return source.get_instance(self.clients(), instance)

    def snapshot_instance(self, env: Mapping[str, Any], instance: str, workdir: Path,
                          action: ActionContext = NO_ACTION) -> SourceSnapshot:
        return source.snapshot_instance(self.clients(), instance, workdir, action)

    def open_disk(self, snapshot: SourceSnapshot, disk: DiskLocator) -> DiskSource:
        return source.open_disk(self.clients(), disk)

    def delete_snapshot(self, snapshot: SourceSnapshot) -> None:
        source.delete_snapshot(self.clients(), snapshot)

    # -- destination ------------------------------------------------------------------------

    def check_destination_environment(self, env: Mapping[str, Any], network_map: Mapping[str, Any]) -> None:
        """Credentials, subscription and role, then the VM size and the subnets/NSGs named."""
        self.validate_connection()
        deploy.check_environment(self.clients(), env, network_map)

    def validate_destination(self, env: Mapping[str, Any], export_info: InstanceInfo,
                             action: ActionContext = NO_ACTION) -> None:
        """Credentials, subscription, role, VM size and subnets/NSGs, before any byte moves."""
        self.validate_connection()
        clients = self.clients()
        deploy.choose_vm_size(clients, env, export_info)
        deploy.plan_nics(clients, env, action.network_map, export_info)

    async def import_disk(self, env: Mapping[str, Any], export_info: InstanceInfo, disk: DiskLocator,
                          ctx: TransferContext, action: ActionContext = NO_ACTION) -> ImportedDisk:
        # Off the event loop: the first call imports the Azure SDK and builds its clients (seconds).
        clients = await asyncio.to_thread(self.clients)
        return await importer.import_disk(clients, env, export_info, disk, ctx, action)

    def deploy_instance(self, env: Mapping[str, Any], export_info: InstanceInfo,
                        disks: list[ImportedDisk], action: ActionContext = NO_ACTION) -> DeployedInstance:
        return deploy.deploy_instance(self.clients(), env, export_info, disks, action)

    def cleanup(self, env: Mapping[str, Any], instance: str, disks: list[ImportedDisk],
                deployed: DeployedInstance | None, succeeded: bool, action: ActionContext = NO_ACTION) -> list[str]:
        return cleanup_mod.cleanup(self.clients(), env, disks, deployed, succeeded, action.action_id,
                                   action.source_name)
