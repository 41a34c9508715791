"""Request bodies of transfers, executions, schedules and deployments (reference §1.3-1.6).

Coriolis clients send explicit ``null`` for unset keys: null means the default. Minion pools
don't exist in Sterna: a pool id is refused rather than silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from api.schemas import _Body, check_instances

_POOL_FIELDS = ("origin_minion_pool_id", "destination_minion_pool_id")


class _NoPools(_Body):
    origin_minion_pool_id: str | None = None
    destination_minion_pool_id: str | None = None
    instance_osmorphing_minion_pool_mappings: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _no_pools(self) -> _NoPools:
        if any(getattr(self, f) for f in _POOL_FIELDS) or self.instance_osmorphing_minion_pool_mappings:
            raise ValueError("Sterna has no minion pools: leave the minion pool fields empty")
        return self


class TransferCreate(_NoPools):
    scenario: Literal["replica", "live_migration"] | None = None
    origin_endpoint_id: str
    destination_endpoint_id: str
    instances: list[str]
    source_environment: dict[str, Any] | None = None
    destination_environment: dict[str, Any] | None = None
    network_map: dict[str, Any] | None = None
    storage_mappings: dict[str, Any] | None = None
    user_scripts: dict[str, Any] | None = None
    notes: str | None = None
    clone_disks: bool | None = None
    skip_os_morphing: bool | None = None

    @field_validator("instances")
    @classmethod
    def _instances(cls, value: list[str]) -> list[str]:
        return check_instances(value)


class TransferUpdate(_NoPools):
    source_environment: dict[str, Any] | None = None
    destination_environment: dict[str, Any] | None = None
    network_map: dict[str, Any] | None = None
    storage_mappings: dict[str, Any] | None = None
    user_scripts: dict[str, Any] | None = None
    notes: str | None = None
    clone_disks: bool | None = None
    skip_os_morphing: bool | None = None


class ExecutionCreate(_Body):
    shutdown_instances: bool | None = None
    auto_deploy: bool | None = None


class DeploymentCreate(_Body):
    transfer_id: str | None = None
    #: the legacy ``migration`` body of old clients (``migration deploy replica``)
    replica_id: str | None = None
    clone_disks: bool | None = None
    force: bool | None = None
    skip_os_morphing: bool | None = None
    user_scripts: dict[str, Any] | None = None
    instance_osmorphing_minion_pool_mappings: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _source(self) -> DeploymentCreate:
        if not (self.transfer_id or self.replica_id):
            raise ValueError("'transfer_id' is required")
        if self.instance_osmorphing_minion_pool_mappings:
            raise ValueError("Sterna has no minion pools: leave the minion pool fields empty")
        return self


_RANGES = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 6)}


class Cron(_Body):
    """Coriolis's cron fields; an omitted (or null) field is a wildcard."""

    minute: int | None = None
    hour: int | None = None
    dom: int | None = None
    month: int | None = None
    dow: int | None = None

    @model_validator(mode="after")
    def _ranges(self) -> Cron:
        for name, (low, high) in _RANGES.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise ValueError(f"'{name}' must be between {low} and {high}, not {value}")
        return self

    def expression(self) -> str:
        return " ".join("*" if getattr(self, n) is None else str(getattr(self, n)) for n in _RANGES)


class ScheduleCreate(_Body):
    schedule: Cron = Field(default_factory=Cron)
    enabled: bool | None = None
    expiration_date: datetime | None = None
    shutdown_instance: bool | None = None
    auto_deploy: bool | None = None


class ScheduleUpdate(_Body):
    schedule: Cron | None = None
    enabled: bool | None = None
    expiration_date: datetime | None = None
    shutdown_instance: bool | None = None
    auto_deploy: bool | None = None
