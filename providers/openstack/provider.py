"""The ``openstack`` provider: Nova servers and Glance images, as source and destination.

connection_info, one of:

* ``{}`` — the "same cloud": the caller's own Keystone (the migration's or transfer's trust). This is the
  seed's "no further authentication";
* ``{"secret_ref": "<barbican href>"}`` or ``{"secret_id": "<uuid>"}`` — resolved by the
  activity into the JSON below;
* ``{"auth_url", "username", "password", "project_name" | "project_id", "user_domain_name" |
  "user_domain_id", "project_domain_name" | "project_domain_id", "region_name", "interface",
  "allow_untrusted", "cafile"}``.

This class is a facade over role modules: ``cloud`` (Keystone session and REST calls),
``options`` (schemas, listings), ``instances`` (inventory), ``source`` (Nova snapshot downloaded
from Glance), ``importer`` (upload into Glance), ``deploy`` (server and boot check), ``cleanup``;
``glance`` moves the image bytes.

A transfer's replica disks are in Sterna's replica store (``providers.replica_store``): a Glance image
can't be written in place once active.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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
from diskio.base import DiskSource
from providers.base import (
    NO_ACTION,
    ActionContext,
    BootVerifier,
    DestinationOptionsProvider,
    EndpointProvider,
    ExportProvider,
    ImportProvider,
    NetworksProvider,
    SourceOptionsProvider,
    StorageProvider,
    TransferContext,
)
from providers.openstack import cleanup as cleanup_mod
from providers.openstack import deploy, importer, instances, options, source
from providers.openstack.cloud import Cloud
from providers.replica_store import StoredReplicas


class OpenStackProvider(
    EndpointProvider, ExportProvider, ImportProvider, NetworksProvider, StorageProvider,
    DestinationOptionsProvider, SourceOptionsProvider, BootVerifier, StoredReplicas,
):
    PLUGIN_NAME = "openstack"
    TARGET_DISK_FORMAT = "qcow2"
    TARGET_PLATFORM = "kvm"
    WINDOWS_TARGET = "openstack"

    def __init__(self, connection_info: Mapping[str, Any]) -> None:
        super().__init__(connection_info)
        self._cloud: Cloud | None = None

    @property
    def cloud(self) -> Cloud:
        if self._cloud is None:
            self._cloud = Cloud(self.connection_info)
        return self._cloud

    @classmethod
    def connection_info_schema(cls) -> dict[str, Any]:
        return options.CONNECTION_INFO_SCHEMA

    @classmethod
    def destination_environment_schema(cls) -> dict[str, Any]:
        return options.DESTINATION_SCHEMA

    # -- endpoint ----------------------------------------------------------------------------------
    def validate_connection(self) -> None:
        options.validate_connection(self.cloud)

    def list_networks(self, env: Mapping[str, Any]) -> list[NetworkInfo]:
        return options.list_networks(self.cloud)

    def list_storage(self, env: Mapping[str, Any]) -> StorageInfo:
        return options.list_storage(self.cloud)

    def destination_options(self, env: Mapping[str, Any]) -> list[OptionValues]:
        return options.destination_options(self.cloud)

    def source_options(self, env: Mapping[str, Any]) -> list[OptionValues]:
        return options.source_options()

    # -- inventory ---------------------------------------------------------------------------------
    def list_instances(self, env: Mapping[str, Any], name_filter: str | None = None) -> list[InstanceInfo]:
        return instances.list_instances(self.cloud, name_filter)

    def get_instance(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        return instances.get_instance(self.cloud, instance)

    # -- source ------------------------------------------------------------------------------------
    def shutdown_instance(self, env: Mapping[str, Any], instance: str) -> None:
        source.shutdown_instance(self.cloud, instance)

    def snapshot_instance(self, env: Mapping[str, Any], instance: str, workdir: Path,
                          action: ActionContext = NO_ACTION) -> SourceSnapshot:
        return source.snapshot_instance(self.cloud, env, instance, workdir, stop=action.stop)

    def open_disk(self, snapshot: SourceSnapshot, disk: DiskLocator) -> DiskSource:
        return source.open_disk(disk)

    def delete_snapshot(self, snapshot: SourceSnapshot) -> None:
        source.delete_snapshot(self.cloud, snapshot)

    # -- destination -------------------------------------------------------------------------------
    def validate_destination(self, env: Mapping[str, Any], export_info: InstanceInfo,
                             action: ActionContext = NO_ACTION) -> None:
        deploy.validate_destination(self.cloud, env, export_info, action)

    async def import_disk(
        self, env: Mapping[str, Any], export_info: InstanceInfo, disk: DiskLocator, ctx: TransferContext,
        action: ActionContext = NO_ACTION,
    ) -> ImportedDisk:
        name = f"{deploy.instance_name(action, export_info)}-{disk.disk_id}"
        return await importer.import_disk(self.cloud, export_info, disk, ctx, action, name=name,
                                          disk_format=self.TARGET_DISK_FORMAT)

    def deploy_instance(
        self, env: Mapping[str, Any], export_info: InstanceInfo, disks: list[ImportedDisk],
        action: ActionContext = NO_ACTION,
    ) -> DeployedInstance:
        return deploy.deploy_instance(self.cloud, env, export_info, disks, action)

    def verify_boot(self, env: Mapping[str, Any], deployed: DeployedInstance, timeout: float,
                    on_stage: Callable[[str], None] | None = None) -> list[str]:
        # on_stage: this check polls the console and returns its lines at the end; no stages yet.
        return deploy.verify_boot(self.cloud, deployed, timeout)

    def cleanup(
        self,
        env: Mapping[str, Any],
        instance: str,
        disks: list[ImportedDisk],
        deployed: DeployedInstance | None,
        succeeded: bool,
        action: ActionContext = NO_ACTION,
    ) -> list[str]:
        return cleanup_mod.cleanup(self.cloud, disks, deployed, succeeded, action)
