"""Tags that mark what Sterna created in Azure, so that cleanup finds it after a crash too."""

from __future__ import annotations

import re
from typing import Any

from providers.base import MIGRATION_ID, ActionContext

MIGRATION_TAG = "sterna-migration-id"
ROLE_TAG = "sterna-role"
DISK_TAG = "sterna-disk-id"
SOURCE_INSTANCE_TAG = "sterna-source-instance"
UPLOAD_TAG = "sterna-upload"

ROLE_DISK = "disk"
ROLE_NIC = "nic"
ROLE_VM = "vm"
ROLE_SOURCE_SNAPSHOT = "source-snapshot"
UPLOAD_COMPLETE = "complete"


#: ``ActionContext.tags`` keys, spelled Azure's way
KEYS = {MIGRATION_ID: MIGRATION_TAG}


def action_tags(action: ActionContext) -> dict[str, str]:
    """The tags the engine asks every resource of the action to carry (none outside an action)."""
    return {KEYS[key]: value for key, value in action.tags.items()}


def resource_name(*parts: str, limit: int = 64) -> str:
    """A resource name Azure accepts (letters, digits, ``-``, ``_``; no leading/trailing ``-``)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(p for p in parts if p)).strip("-_")
    return name[:limit].rstrip("-_") or "sterna"


def parse_id(rid: str) -> dict[str, str]:
    """``/subscriptions/s/resourceGroups/g/providers/NS/type/name/...`` → its key/value segments (lower keys)."""
    segs = rid.strip("/").split("/")
    out = {segs[i].lower(): segs[i + 1] for i in range(0, len(segs) - 1, 2)}
    return out


def text(value: Any) -> str:
    """An SDK enum (``DiskState.ACTIVE_UPLOAD``) or string as ARM's own spelling (``ActiveUpload``)."""
    return str(getattr(value, "value", value) or "")
