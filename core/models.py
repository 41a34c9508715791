"""Shared vocabulary: the Coriolis-shaped descriptions of instances, disks and NICs.

These models cross the Temporal boundary (as activity results) and the provider boundary,
so they live here, free of any heavy import. Field names follow Coriolis'
``vm_export_info`` schema so that API responses render in existing clients.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class DiskInfo(_Model):
    id: str
    size_bytes: int
    format: str = "raw"
    path: str | None = None
    allocation_type: Literal["static", "dynamic"] | None = None
    unit_number: int | None = None
    controller_id: str | None = None
    storage_backend_identifier: str | None = None


class NicInfo(_Model):
    network_name: str
    mac_address: str
    id: str | None = None
    name: str | None = None
    ip_addresses: list[str] = Field(default_factory=list)


class Devices(_Model):
    disks: list[DiskInfo] = Field(default_factory=list)
    nics: list[NicInfo] = Field(default_factory=list)
    cdroms: list[dict[str, Any]] = Field(default_factory=list)
    serial_ports: list[dict[str, Any]] = Field(default_factory=list)
    floppies: list[dict[str, Any]] = Field(default_factory=list)
    controllers: list[dict[str, Any]] = Field(default_factory=list)


class InstanceInfo(_Model):
    """Coriolis ``export_info``: what a source knows about one VM."""

    id: str
    name: str
    instance_name: str | None = None
    num_cpu: int
    memory_mb: int
    os_type: str = "linux"
    firmware_type: Literal["BIOS", "EFI"] = "BIOS"
    guest_id: str | None = None
    flavor_name: str | None = None
    hostname: str | None = None
    nested_virtualization: bool = False
    secure_boot: bool = False
    power_state: str | None = None
    devices: Devices = Field(default_factory=Devices)


class NetworkInfo(_Model):
    id: str
    name: str


class StorageBackend(_Model):
    id: str
    name: str


class StorageInfo(_Model):
    storage_backends: list[StorageBackend] = Field(default_factory=list)
    config_default: str | None = None


class OptionValues(_Model):
    """One entry of Coriolis' destination/source options listing."""

    name: str
    values: list[Any] = Field(default_factory=list)
    config_default: Any = None


class DiskLocator(_Model):
    """Where one disk's bytes are, for a provider to reopen it in a later activity."""

    disk_id: str
    size_bytes: int
    format: str = "raw"
    path: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


#: ``source_environment`` key a transfer execution sets (to the transfer id): the snapshot also starts
#: tracking changes for the next execution (``providers.base.ChangeTrackingSource``). Activities hand it
#: to providers as ``ActionContext.change_tracking`` (``activities.context``)
CHANGE_TRACKING = "change_tracking"


class SourceSnapshot(_Model):
    """A point-in-time view of a source instance, created by ``snapshot_instance``."""

    instance: str
    snapshot_id: str
    disks: list[DiskLocator]
    details: dict[str, Any] = Field(default_factory=dict)


class ImportedDisk(_Model):
    disk_id: str
    details: dict[str, Any] = Field(default_factory=dict)


class DeployedInstance(_Model):
    """What a destination created; also the input to cleanup and boot verification."""

    instance: str
    id: str | None = None
    name: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
