"""Tags that mark what Sterna created, so that cleanup finds it even after a crash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.base import MIGRATION_ID, ActionContext

MIGRATION_TAG = "sterna:migration-id"
ROLE_TAG = "sterna:role"
DISK_TAG = "sterna:disk-id"
SOURCE_INSTANCE_TAG = "sterna:source-instance"
UPLOAD_TAG = "sterna:upload"
#: on a snapshot written as a child (``ParentSnapshotId``): its parent, and the number of blocks written
#: into it, which is how a reader of the chain tells whether the service lists inherited blocks
PARENT_TAG = "sterna:parent-snapshot"
BLOCKS_TAG = "sterna:blocks-written"
#: on a replica snapshot being written: the transfer execution writing it, whose retry may resume into it
EXECUTION_TAG = "sterna:execution-id"

# Values of ROLE_TAG. Destination cleanup only touches the destination roles, so that an
# AWS-to-AWS migration never deletes the source side's snapshots from the wrong place.
ROLE_IMPORT_SNAPSHOT = "import-snapshot"
ROLE_IMAGE = "image"
ROLE_INSTANCE = "instance"
ROLE_VOLUME = "volume"
ROLE_SOURCE_SNAPSHOT = "source-snapshot"
#: a transfer's released source snapshot, kept as the baseline of the next ListChangedBlocks
ROLE_CHANGE_MARKER = "change-marker"
DESTINATION_ROLES = (ROLE_IMPORT_SNAPSHOT, ROLE_IMAGE, ROLE_INSTANCE, ROLE_VOLUME)

UPLOAD_IN_PROGRESS = "in-progress"
#: every block written and CompleteSnapshot accepted; not yet read back and compared
UPLOAD_WRITTEN = "written"
UPLOAD_COMPLETE = "complete"


#: ``ActionContext.tags`` keys, spelled AWS's way
KEYS = {MIGRATION_ID: MIGRATION_TAG}


def action_tags(action: ActionContext) -> dict[str, str]:
    """The tags the engine asks every resource of the action to carry (none outside an action)."""
    return {KEYS[key]: value for key, value in action.tags.items()}


def tag_list(tags: Mapping[str, str | None]) -> list[dict[str, str]]:
    """AWS ``[{"Key":..,"Value":..}]`` form, dropping unset values."""
    return [{"Key": k, "Value": str(v)[:256]} for k, v in tags.items() if v is not None]


def tag_specs(resource_types: list[str], tags: Mapping[str, str | None]) -> list[dict[str, Any]]:
    """``TagSpecifications`` for the given resource types."""
    items = tag_list(tags)
    return [{"ResourceType": rt, "Tags": items} for rt in resource_types]


def filters(tags: Mapping[str, str | list[str]]) -> list[dict[str, Any]]:
    """``Filters`` matching resources by tag values."""
    return [{"Name": f"tag:{k}", "Values": v if isinstance(v, list) else [v]} for k, v in tags.items()]


def as_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    """AWS tag list to a dict."""
    return {t["Key"]: t["Value"] for t in tags or []}
