"""Names that mark what Sterna created in Glance and Nova, so that cleanup finds it after a crash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.base import ActionContext

#: image property and server metadata key holding the migration id
MIGRATION_KEY = "sterna_migration_id"
#: image property and server metadata key naming the source instance (its export info's name): one
#: instance's cleanup removes what carries its own name, never a sibling's of the same action
SOURCE_KEY = "sterna_source_instance"
#: image property naming the source disk an uploaded image holds
DISK_KEY = "sterna_disk_id"
#: Glance tag on every image Sterna uploads
IMAGE_TAG = "sterna"
#: name prefix of the Nova snapshots taken of a source server
SNAPSHOT_PREFIX = "sterna-snapshot-"


def migration_id(action: ActionContext) -> str:
    """The id of the action (migration, transfer, deployment) resources are marked with ("" outside one)."""
    return action.action_id or ""


def server_migration(server: Mapping[str, Any]) -> str | None:
    """The migration id a server was created for, if Sterna created it."""
    value = (server.get("metadata") or {}).get(MIGRATION_KEY)
    return str(value) if value is not None else None
