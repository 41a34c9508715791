"""Image creation on the GCP destination, retried: an earlier attempt's image is taken, not made twice; and
one instance's cleanup, which leaves its siblings' objects and images alone."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from core.models import DiskLocator, ImportedDisk, InstanceInfo
from providers.base import ActionContext, TransferContext, TransferProgress
from providers.gcp.deploy import MIGRATION_LABEL, create_image
from providers.gcp.provider import GcpProvider
from providers.gcp.upload import instance_key
from tests.peers.gcp import gce, gcp_conn_info, gcs_objects, gcs_url

__all__ = ["gce", "gcp_conn_info", "gcs_url"]


def _imported(provider: GcpProvider, tmp_path: Path, action: ActionContext) -> tuple[InstanceInfo, ImportedDisk]:
    """``action.instance``'s disk-0 (8 MiB, 1 MiB of random data) uploaded as the action's."""
    path = tmp_path / f"{action.instance}.raw"
    with open(path, "wb") as f:
        f.truncate(8 * 1024**2)
        f.write(os.urandom(1024**2))
    info = InstanceInfo(id=action.instance, name=action.instance, num_cpu=1, memory_mb=1024)
    disk = DiskLocator(disk_id="disk-0", size_bytes=path.stat().st_size, path=str(path))

    async def beat(p: TransferProgress) -> None:
        await asyncio.sleep(0)

    return info, asyncio.run(provider.import_disk({}, info, disk, TransferContext(workdir=tmp_path, progress=beat),
                                                  action))


def _images(provider: GcpProvider, migration: str) -> list[str]:
    images = provider.conn.compute("ImagesClient").list(project=provider.conn.project)
    return sorted(i.name for i in images if i.labels.get(MIGRATION_LABEL) == migration)


def test_a_retried_insert_takes_its_own_earlier_image(gcp_conn_info: dict[str, Any], tmp_path: Path) -> None:
    provider = GcpProvider(gcp_conn_info)
    action = ActionContext(action_id="mig-image", instance="vm")
    info, imported = _imported(provider, tmp_path, action)
    key = instance_key(action, info.name)
    name = create_image(provider.conn, info, imported, "mig-image", key)
    # The worker died after the insert: the retry's insert is a 409, and the image is ours and READY.
    assert create_image(provider.conn, info, imported, "mig-image", key) == name
    assert _images(provider, "mig-image") == [name]


def test_an_instances_cleanup_leaves_its_siblings_objects_and_images(gcp_conn_info: dict[str, Any],
                                                                      gcs_url: str, tmp_path: Path) -> None:
    """Two VMs of one migration, both with a ``disk-0``: each has its own object and image, and the cleanup
    of one (failed, or done) removes its own only, while the other's deploy may still need them."""
    provider, bucket = GcpProvider(gcp_conn_info), gcp_conn_info["bucket"]
    made = {}
    for vm in ("vm-a", "vm-b"):
        action = ActionContext(action_id="mig-two", instance=vm)
        info, imported = _imported(provider, tmp_path, action)
        made[vm] = (action, imported, create_image(provider.conn, info, imported, "mig-two",
                                                   instance_key(action, vm)))
    assert len({m[1].details["object"] for m in made.values()}) == len(_images(provider, "mig-two")) == 2

    action, imported, _image = made["vm-b"]
    provider.cleanup({}, "vm-b", [imported], None, False, action)  # vm-b failed; vm-a deploys on
    assert _images(provider, "mig-two") == [made["vm-a"][2]]
    assert [o["name"] for o in gcs_objects(gcs_url, bucket)] == [made["vm-a"][1].details["object"]]
    action, imported, _image = made["vm-a"]
    provider.cleanup({}, "vm-a", [], None, True, action)  # done: its scaffolding goes, found by its labels
    assert _images(provider, "mig-two") == [] and gcs_objects(gcs_url, bucket) == []
