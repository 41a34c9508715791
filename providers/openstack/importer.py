"""Destination data path: one converted qcow2 disk streamed into a new Glance image, checked
against Glance's own checksum, multihash and size.

The bytes move through the disk engine (``glance.upload``): the shared bandwidth limiter,
progress and heartbeats. Glance then makes the image ``active``; the activity keeps
heartbeating while it waits, so it stays cancellable and a dead worker is noticed in time.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from core.models import DiskLocator, ImportedDisk, InstanceInfo
from diskio.keepalive import beating, in_thread
from providers.base import ActionContext, TransferContext, TransferProgress
from providers.openstack import glance
from providers.openstack import tags as t
from providers.openstack.cloud import Cloud

#: seconds Glance gets to make an uploaded image active
ACTIVE_TIMEOUT = 600


async def import_disk(cloud: Cloud, export_info: InstanceInfo, disk: DiskLocator, ctx: TransferContext,
                      action: ActionContext, *, name: str, disk_format: str) -> ImportedDisk:
    assert disk.path is not None
    path = Path(disk.path)
    migration_id = t.migration_id(action)
    # A retried upload starts over: Glance images can't be resumed, and a queued or
    # half-written image of an earlier attempt is deleted first.
    images = await asyncio.to_thread(cloud.request, "image", "GET", f"/v2/images?name={name}&limit=100")
    for old in images["images"]:
        if old.get(t.MIGRATION_KEY) == migration_id:
            await asyncio.to_thread(cloud.request, "image", "DELETE", f"/v2/images/{old['id']}")
    image = await asyncio.to_thread(cloud.request, "image", "POST", "/v2/images", json={
        "name": name, "disk_format": disk_format, "container_format": "bare",
        "visibility": "private", "tags": [t.IMAGE_TAG], t.MIGRATION_KEY: migration_id,
        t.DISK_KEY: disk.disk_id, t.SOURCE_KEY: export_info.name, "hw_disk_bus": "virtio", "hw_vif_model": "virtio",
        # Nova reads os_type: a Windows guest gets its RTC in local time and Hyper-V enlightenments
        "os_type": "windows" if export_info.os_type == "windows" else "linux",
        **({"hw_firmware_type": "uefi"} if export_info.firmware_type == "EFI" else {}),
    })
    size = path.stat().st_size
    digests = await glance.upload(cloud, image["id"], path, on_progress=ctx.progress,
                                  bandwidth_limit=ctx.bandwidth_limit)
    final = await wait_active(cloud, image["id"], ctx, TransferProgress(size, size, [(0, size)]))
    glance.verify(final, digests, size)
    await ctx.aevent(f"Uploaded {disk.disk_id} to Glance image {image['id']}: {size} bytes, md5 {digests['md5']} "
                     "(matches Glance's checksum)")
    return ImportedDisk(disk_id=disk.disk_id, details={
        "image_id": image["id"], "image_name": name, "format": disk_format, "size": size,
        "checksum": digests["md5"], "virtual_size": disk.size_bytes})


async def wait_active(cloud: Cloud, image_id: str, ctx: TransferContext, sent: TransferProgress) -> dict[str, Any]:
    """Glance's image once ``active``, heartbeating the finished upload meanwhile; a cancel stops the poll."""
    stop = threading.Event()

    def active() -> dict[str, Any]:
        return cloud.wait(f"image {image_id}", lambda: cloud.request("image", "GET", f"/v2/images/{image_id}"),
                          {"active"}, {"killed", "deleted"}, ACTIVE_TIMEOUT, 0.5, stop=stop)

    return await beating(lambda: ctx.progress(sent), in_thread(active), on_cancel=stop.set)
