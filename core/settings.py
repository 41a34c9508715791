"""Service configuration, from the environment (``STERNA_*``) through pydantic-settings.

``TEMPORAL_ADDRESS`` is read without the prefix, matching Temporal's own tools.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STERNA_", extra="ignore")

    #: where the embedded stack keeps its SQLite files, key and scratch space
    data_dir: Path = Path.home() / ".sterna"
    #: record DB; default is SQLite in ``data_dir``
    database_url: str | None = None
    temporal_address: str = Field(
        "127.0.0.1:7233", validation_alias=AliasChoices("TEMPORAL_ADDRESS", "STERNA_TEMPORAL_ADDRESS")
    )
    temporal_namespace: str = Field(
        "default", validation_alias=AliasChoices("TEMPORAL_NAMESPACE", "STERNA_TEMPORAL_NAMESPACE")
    )
    #: the queue that workflows and light activities use
    task_queue: str = "sterna"
    api_host: str = "0.0.0.0"
    api_port: int = 7667
    temporal_ui_port: int = 8233
    #: request bodies past this size get a 413 (a migration body is a few KiB)
    api_max_body_bytes: int = 1024 * 1024
    #: JSON bodies nested deeper than this get a 400
    api_max_json_depth: int = 32
    auth_strategy: Literal["noauth", "keystone"] = "noauth"
    #: Fernet key for connection_info at rest; generated into data_dir when unset
    secret_key: str | None = None
    #: stable id of this worker host: its disk activities are pinned to ``sterna-host-<id>``
    worker_host_id: str = Field(default_factory=socket.gethostname)
    #: scratch space for exported and converted disks (defaults to data_dir/scratch)
    scratch_dir: Path | None = None
    #: where Sterna keeps the replica disks of destinations that can't keep them themselves (OpenStack,
    #: Azure, GCP; ``providers.replica_store``), default ``data_dir/replicas``. Every worker must reach
    #: the same directory: one worker host, or storage shared by all of them
    replica_dir: Path | None = None
    #: directories under which ``local`` endpoints may live (default: ``data_dir/inventories``); JSON list
    local_roots: list[Path] = Field(default_factory=list)
    #: run ``sterna db upgrade`` when the API starts; turn off where an init step runs it (several API processes)
    db_upgrade_on_start: bool = True
    #: ``host:port`` where the worker serves Sterna's Prometheus metrics (bytes moved, steps...); unset: off
    worker_metrics_address: str | None = None
    #: ``host:port`` where the worker's Temporal SDK runtime serves its own Prometheus metrics; unset: off
    temporal_metrics_address: str | None = None
    #: OTLP/HTTP endpoint (``http://collector:4318/v1/traces``) the API and workers send traces to; unset: off
    otlp_traces_endpoint: str | None = None
    #: concurrent disk activities per worker host
    max_disk_activities: int = 4
    #: exports reading from one source host (ESXi host, hypervisor) at once, across all workers; 0: no limit
    max_transfers_per_source_host: int = 8
    # Temporal timeouts, in seconds; inputs rather than constants so tests can shorten them.
    heartbeat_timeout: float = 30.0
    #: most seconds between two heartbeats the SDK sends (it sends the latest at that pace). A cancel
    #: reaches an activity only in a heartbeat's response: the SDK's own 0.8 x heartbeat timeout
    #: (24 s) let a cancelled copy run on that long.
    heartbeat_throttle: float = 1.0
    #: seconds the worker's event loop may go without turning before it logs where it is stuck
    #: (``worker.loop_watch``): every heartbeat of the process waits on that loop
    loop_stall_warning: float = 1.0
    transfer_timeout: float = 24 * 3600.0
    host_schedule_to_start_timeout: float = 3600.0
    retry_max_interval: float = 30.0
    #: ``POST /migrations`` creates a ``live_migration`` transfer and runs one execution of it with
    #: ``auto_deploy`` (issue 13; ``api.live_migrations``). Off: the one-shot ``MigrationWorkflow``.
    migrations_on_transfers: bool = True
    # Keystone (auth_strategy = keystone). The service user validates callers' tokens, is the
    # trustee of migration trusts and reads Barbican secrets through them.
    keystone_auth_url: str | None = None
    keystone_username: str = "sterna"
    keystone_password: str | None = None
    keystone_project_name: str = "service"
    keystone_user_domain_id: str = "default"
    keystone_project_domain_id: str = "default"
    keystone_region: str | None = None
    #: seconds a validated token is served from the API's cache (never past its expiry)
    keystone_token_cache_ttl: float = 300.0
    #: YAML or JSON file overriding the default policy rules (Coriolis names)
    policy_file: Path | None = None
    # Windows guests: what OS morphing injects. Unset, each is looked for under data_dir/windows/ (and
    # virtio-win also where distributions install it); a path that is set must exist (checked at start).
    #: virtio-win drivers for kvm/openstack: the ISO, or a tree with its ``<driver>/<os>/<arch>`` layout
    virtio_win: Path | None = Field(None, validation_alias=AliasChoices("STERNA_VIRTIO_WIN", "VIRTIO_WIN"))
    #: cloudbase-init's MSI (CloudbaseInitSetup_x64.msi), installed at first boot
    cloudbase_init_msi: Path | None = None
    #: AWS's Windows driver packages, unpacked: a directory holding the NVMe (AWSNVMe.inf) and ENA (ena.inf) INFs
    aws_windows_drivers: Path | None = None

    @field_validator("virtio_win", "cloudbase_init_msi", "aws_windows_drivers")
    @classmethod
    def _must_exist(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"STERNA_{str(info.field_name).upper()}: {value} does not exist")
        return value

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'sterna.db'}"

    @property
    def scratch(self) -> Path:
        return self.scratch_dir or self.data_dir / "scratch"

    @property
    def replica_store(self) -> Path:
        return self.replica_dir or self.data_dir / "replicas"

    @property
    def local_allowed_roots(self) -> list[Path]:
        return self.local_roots or [self.data_dir / "inventories"]

    @property
    def host_task_queue(self) -> str:
        return f"{self.task_queue}-host-{self.worker_host_id}"

    @property
    def data_task_queue(self) -> str:
        return f"{self.task_queue}-data"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment)."""
    get_settings.cache_clear()
