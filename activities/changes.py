"""What a source reports changed since a replica's marker, shared by both kinds of replica disks."""

from __future__ import annotations

import asyncio
from typing import Any

from core.models import DiskLocator, SourceSnapshot
from diskio.base import Extent
from providers.base import ChangeTrackingSource, ExportProvider


async def changed_since(rec: Any, source: ExportProvider, snapshot: SourceSnapshot, disk: DiskLocator,
                        marker: str | None) -> list[Extent] | None:
    """What the source reports changed since the replica's marker (None: compare every chunk)."""
    if not marker or not isinstance(source, ChangeTrackingSource):
        return None
    changed = await asyncio.to_thread(source.changed_extents, snapshot, disk, marker)
    if changed is None:
        await rec.aevent(f"The source no longer knows marker {marker} of {disk.disk_id}: "
                         "comparing every chunk's digest")
    else:
        await rec.aevent(f"{sum(e.length for e in changed)} bytes of {disk.disk_id} changed since marker {marker}")
    return changed
