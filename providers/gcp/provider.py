"""``GcpProvider``: Google Cloud as a migration destination and source (Compute Engine + Cloud Storage).

Control-plane calls use ``google-cloud-compute`` over REST and ``google-cloud-storage``;
``import_disk`` streams the disk into GCS (``upload``), ``deploy_instance`` makes images and
the instance (``deploy``); as a source, disks are snapshotted and exported to GCS as images,
then streamed back (``source``). Failures surface as ``core.errors`` through ``connection.gcp_errors``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import InvalidInput, NotFound
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
from core.models import StorageBackend as Backend
from providers.base import (
    NO_ACTION,
    ActionContext,
    DestinationOptionsProvider,
    EndpointProvider,
    ExportProvider,
    ImportProvider,
    NetworksProvider,
    StorageProvider,
    TransferContext,
)
from providers.gcp import cleanup as cleanup_mod
from providers.gcp import deploy, source, upload
from providers.gcp.connection import CONNECTION_INFO_SCHEMA, GcpConnection, gcp_errors
from providers.replica_store import StoredReplicas

if TYPE_CHECKING:
    from diskio.base import DiskSource

DESTINATION_SCHEMA: dict[str, Any] = {
    "$schema": "http://cloudbase.it/coriolis/schemas/gcp_destination_env#",
    "type": "object",
    "properties": {
        "zone": {"type": "string", "description": "overrides the endpoint's zone"},
        "machine_type": {"type": "string", "description": "default: the smallest that fits"},
        "network_map": {"type": "object", "additionalProperties": {"oneOf": [
            {"type": "string", "description": "subnetwork name in the zone's region"},
            {"type": "object", "properties": {"subnetwork": {"type": "string"}}, "required": ["subnetwork"]}]}},
        "network_tags": {"type": "array", "items": {"type": "string"}},
        "disk_type": {"type": "string", "enum": ["pd-standard", "pd-balanced", "pd-ssd"]},
        "nic_type": {"type": "string", "enum": ["GVNIC", "VIRTIO_NET"]},
        "bucket": {"type": "string", "description": "overrides the endpoint's staging bucket"},
        "keep_image": {"type": "boolean", "default": False},
        "keep_tarball": {"type": "boolean", "default": False},
    },
    "required": ["network_map"],
}

SOURCE_SCHEMA: dict[str, Any] = {
    "$schema": "http://cloudbase.it/coriolis/schemas/gcp_source_env#",
    "type": "object",
    "properties": {
        "zone": {"type": "string", "description": "the instances' zone (default: the endpoint's)"},
        "bucket": {"type": "string", "description": "where disk images are exported (default: the endpoint's)"},
    },
}


class GcpProvider(EndpointProvider, ImportProvider, ExportProvider, NetworksProvider, StorageProvider,
                  DestinationOptionsProvider, StoredReplicas):
    """Google Compute Engine endpoint: sparse-tarball import through GCS, image, instance; as a source,
    snapshot → image → export to GCS, streamed back. A transfer's replica disks are in Sterna's replica
    store (``providers.replica_store``): images are immutable, a persistent disk is written only attached."""

    PLUGIN_NAME = "gcp"
    TARGET_DISK_FORMAT = "raw"
    TARGET_PLATFORM = "gcp"

    def __init__(self, connection_info: Mapping[str, Any]) -> None:
        super().__init__(connection_info)
        self._conn: GcpConnection | None = None

    @property
    def conn(self) -> GcpConnection:
        if self._conn is None:
            self._conn = GcpConnection.from_info(self.connection_info)
        return self._conn

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
        """The key is accepted, the project exists and the account may read it, the zone and bucket exist."""
        conn = self.conn
        try:
            with gcp_errors(f"reading project {conn.project}", conn.secrets):
                conn.compute("ProjectsClient").get(project=conn.project)
        except NotFound:
            raise InvalidInput(f"unknown project '{conn.project}' (or not visible to "
                               f"{conn.info.get('client_email')})") from None
        deploy.check_zone(conn, conn.zone)
        if conn.bucket:
            with gcp_errors(f"reading bucket {conn.bucket}", conn.secrets):
                if conn.storage().lookup_bucket(conn.bucket) is None:
                    raise InvalidInput(f"the staging bucket '{conn.bucket}' does not exist")

    def list_networks(self, env: Mapping[str, Any]) -> list[NetworkInfo]:
        conn = self.conn
        region = deploy.region_of(deploy.zone_of(conn, env))
        with gcp_errors(f"listing subnetworks of {region}", conn.secrets):
            subs = conn.compute("SubnetworksClient").list(project=conn.project, region=region)
            return [NetworkInfo(id=s.name, name=f"{s.name} ({s.network.rsplit('/', 1)[-1]})") for s in subs]

    def list_storage(self, env: Mapping[str, Any]) -> StorageInfo:
        conn = self.conn
        zone = deploy.zone_of(conn, env)
        with gcp_errors(f"listing disk types of {zone}", conn.secrets):
            types = conn.compute("DiskTypesClient").list(project=conn.project, zone=zone)
            return StorageInfo(storage_backends=[Backend(id=t.name, name=t.name) for t in types],
                               config_default="pd-balanced")

    def destination_options(self, env: Mapping[str, Any]) -> list[OptionValues]:
        conn = self.conn
        zone = deploy.zone_of(conn, env)
        with gcp_errors("listing zones and machine types", conn.secrets):
            zones = [z.name for z in conn.compute("ZonesClient").list(project=conn.project)]
            types = [t.name for t in conn.compute("MachineTypesClient").list(project=conn.project, zone=zone)]
        return [OptionValues(name="zone", values=zones, config_default=conn.zone),
                OptionValues(name="machine_type", values=types)]

    # -- destination ------------------------------------------------------------------------

    def validate_destination(self, env: Mapping[str, Any], export_info: InstanceInfo,
                             action: ActionContext = NO_ACTION) -> None:
        conn = self.conn
        zone = deploy.zone_of(conn, env)
        deploy.check_zone(conn, zone)
        deploy.choose_machine_type(conn, env, export_info, zone)
        deploy.plan_nics(conn, env, action.network_map, export_info, zone)
        bucket = upload.bucket_of(conn, env)
        with gcp_errors(f"reading bucket {bucket}", conn.secrets):
            if conn.storage().lookup_bucket(bucket) is None:
                raise InvalidInput(f"the staging bucket '{bucket}' does not exist")

    async def import_disk(self, env: Mapping[str, Any], export_info: InstanceInfo, disk: DiskLocator,
                          ctx: TransferContext, action: ActionContext = NO_ACTION) -> ImportedDisk:
        return await upload.import_disk(self.conn, env, export_info, disk, ctx, action)

    def deploy_instance(self, env: Mapping[str, Any], export_info: InstanceInfo,
                        disks: list[ImportedDisk], action: ActionContext = NO_ACTION) -> DeployedInstance:
        return deploy.deploy_instance(self.conn, env, export_info, disks, action)

    def cleanup(self, env: Mapping[str, Any], instance: str, disks: list[ImportedDisk],
                deployed: DeployedInstance | None, succeeded: bool, action: ActionContext = NO_ACTION) -> list[str]:
        key = upload.instance_key(action, instance)  # as its upload and its deploy named what they made
        return cleanup_mod.cleanup(self.conn, env, disks, deployed, succeeded, action.action_id or "", key)

    # -- source -----------------------------------------------------------------------------

    def list_instances(self, env: Mapping[str, Any], name_filter: str | None = None) -> list[InstanceInfo]:
        return source.list_instances(self.conn, env, name_filter)

    def get_instance(self, env: Mapping[str, Any], instance: str) -> InstanceInfo:
        return source.get_instance(self.conn, env, instance)

    def shutdown_instance(self, env: Mapping[str, Any], instance: str) -> None:
        source.shutdown_instance(self.conn, env, instance)

    def snapshot_instance(self, env: Mapping[str, Any], instance: str, workdir: Path,
                          action: ActionContext = NO_ACTION) -> SourceSnapshot:
        return source.snapshot_instance(self.conn, env, instance, workdir, action)

    def open_disk(self, snapshot: SourceSnapshot, disk: DiskLocator) -> DiskSource:
        return source.open_disk(self.conn, snapshot, disk)

    def delete_snapshot(self, snapshot: SourceSnapshot) -> None:
        source.delete_snapshot(self.conn, snapshot)
