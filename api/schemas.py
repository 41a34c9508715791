"""Request bodies. Coriolis clients send explicit ``null`` for unset keys: null means default."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

#: Instance names become child workflow ids (``migration-<uuid>/vm-<name>``, Temporal allows 1000
#: characters) and folder names (255 bytes on most filesystems).
MAX_INSTANCE_NAME_BYTES = 255


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EndpointCreate(_Body):
    name: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1)
    connection_info: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    mapped_regions: list[str] | None = None


class EndpointUpdate(_Body):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = None
    connection_info: dict[str, Any] | None = None
    mapped_regions: list[str] | None = None


class InlineOrigin(_Body):
    type: str = Field(min_length=1)
    connection_info: dict[str, Any] | None = None
    source_environment: dict[str, Any] | None = None


class InlineDestination(_Body):
    type: str = Field(min_length=1)
    connection_info: dict[str, Any] | None = None
    target_environment: dict[str, Any] | None = None


def check_instances(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("at least one instance is required")
    if any(not isinstance(v, str) or not v.strip() for v in value):
        raise ValueError("instance names must be non-empty strings")
    if any(len(v.encode()) > MAX_INSTANCE_NAME_BYTES for v in value):
        raise ValueError(f"instance names are at most {MAX_INSTANCE_NAME_BYTES} bytes (UTF-8)")
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise ValueError(f"duplicate instances: {', '.join(dupes)}")
    return value


class MigrationCreate(_Body):
    """Both the endpoint form and the seed's inline form (``origin``/``destination`` objects)."""

    origin_endpoint_id: str | None = None
    destination_endpoint_id: str | None = None
    origin: InlineOrigin | None = None
    destination: InlineDestination | None = None
    instances: list[str]
    source_environment: dict[str, Any] | None = None
    destination_environment: dict[str, Any] | None = None
    network_map: dict[str, Any] | None = None
    storage_mappings: dict[str, Any] | None = None
    user_scripts: dict[str, Any] | None = None
    # Strict: "yes", 1 or "false" are errors, not truthy values.
    skip_os_morphing: StrictBool | None = None
    shutdown_instances: StrictBool | None = None
    replication_count: int | None = Field(default=None, ge=1, le=10)
    notes: str | None = None

    @field_validator("instances")
    @classmethod
    def _instances(cls, value: list[str]) -> list[str]:
        return check_instances(value)

    @model_validator(mode="after")
    def _one_form(self) -> MigrationCreate:
        if (self.origin_endpoint_id is None) == (self.origin is None):
            raise ValueError("give exactly one of 'origin_endpoint_id' or 'origin'")
        if (self.destination_endpoint_id is None) == (self.destination is None):
            raise ValueError("give exactly one of 'destination_endpoint_id' or 'destination'")
        return self


class CancelArgs(_Body):
    force: StrictBool = False


def describe_validation_error(exc: Any) -> str:
    """One readable line from a pydantic ``ValidationError``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)
