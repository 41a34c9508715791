"""Destination data path: one converted qcow2 disk streamed into a new Glance image, checked
against Glance's own checksum and multihash."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.models import DiskLocator, ImportedDisk, InstanceInfo
from providers.base import ActionContext, TransferContext, TransferProgress
from providers.openstack import glance
from providers.openstack import tags as t
from providers.openstack.cloud import Cloud


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
        t.DISK_KEY: disk.disk_id, "hw_disk_bus": "virtio", "hw_vif_model": "virtio",
        **({"hw_firmware_type": "uefi"} if export_info.firmware_type == "EFI" else {}),
    })
    size = path.stat().st_size

    async def progress(done: int, total: int) -> None:
        await ctx.progress(TransferProgress(bytes_done=done, bytes_total=total))

    digests = await glance.upload(cloud, image["id"], path, on_progress=progress,
                                  bandwidth_limit=ctx.bandwidth_limit)
    final = await asyncio.to_thread(cloud.wait, f"image {image['id']}", lambda: cloud.request(
        "image", "GET", f"/v2/images/{image['id']}"), {"active"}, {"killed", "deleted"}, 600, 0.5)
    glance.verify(final, digests, size)
    ctx.event(f"Uploaded {disk.disk_id} to Glance image {image['id']}: {size} bytes, md5 {digests['md5']} "
              "(matches Glance's checksum)")
    return ImportedDisk(disk_id=disk.disk_id, details={
        "image_id": image["id"], "image_name": name, "format": disk_format, "size": size,
        "checksum": digests["md5"], "virtual_size": disk.size_bytes})
