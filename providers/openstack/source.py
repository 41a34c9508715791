"""Source side: a server is exported through a Nova ``createImage`` snapshot downloaded from Glance.

Templates are images: an image name or id is exported as it is, and never deleted. The image
id is kept in the workdir, so a repeated ``snapshot_instance`` reuses the image (and the
download, resumed where it stopped) of the first attempt instead of taking another. The download
is paced by the source environment's ``bandwidth_limit``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import NotFound
from core.limits import bandwidth_limit
from core.models import DiskLocator, SourceSnapshot
from diskio.base import DiskSource
from providers.openstack import glance
from providers.openstack.cloud import Cloud
from providers.openstack.instances import find_image, find_server
from providers.openstack.tags import SNAPSHOT_PREFIX


def shutdown_instance(cloud: Cloud, instance: str) -> None:
    server = find_server(cloud, instance)
    if server is None or server.get("status") == "SHUTOFF":
        return
    cloud.request("compute", "POST", f"/servers/{server['id']}/action", json={"os-stop": None})
    cloud.wait(f"server {instance}", lambda: cloud.request(
        "compute", "GET", f"/servers/{server['id']}")["server"], {"shutoff"}, {"error"}, 600)


def snapshot_instance(cloud: Cloud, env: Mapping[str, Any], instance: str, workdir: Path,
                      stop: threading.Event | None = None) -> SourceSnapshot:
    snap_dir = workdir / "snapshot"
    snap_dir.mkdir(parents=True, exist_ok=True)
    marker = snap_dir / "snapshot.json"
    # Idempotent: a retried activity reuses the image (and download) of the first attempt.
    state: dict[str, Any] = json.loads(marker.read_text()) if marker.exists() else {}
    if not state:
        server = find_server(cloud, instance)
        if server is not None:
            made = cloud.request("compute", "POST", f"/servers/{server['id']}/action",
                                 json={"createImage": {"name": f"{SNAPSHOT_PREFIX}{instance}-"
                                                               f"{uuid.uuid4().hex[:8]}"}})
            state = {"image_id": made["image_id"], "created": True}
        else:
            image = find_image(cloud, instance)
            if image is None:
                raise NotFound(f"No server or image named '{instance}' in this OpenStack project")
            state = {"image_id": image["id"], "created": False}
        marker.write_text(json.dumps(state))
    image_id = state["image_id"]
    image = cloud.wait(f"snapshot image {image_id}", lambda: cloud.request(
        "image", "GET", f"/v2/images/{image_id}"), {"active"}, {"killed", "deleted"}, 3600, stop=stop)
    fmt = image.get("disk_format") or "raw"
    target = snap_dir / f"root.{fmt}"
    if not target.exists():
        glance.download(cloud, image, target, bandwidth_limit=bandwidth_limit(env, "source_environment"), stop=stop)
    from diskio.local import open_local_source

    src = open_local_source(target, fmt)
    try:
        size = src.size
    finally:
        src.close()
    return SourceSnapshot(instance=instance, snapshot_id=image_id,
                          disks=[DiskLocator(disk_id="root", size_bytes=size, format=fmt, path=str(target))],
                          details={"created": state["created"], "dir": str(snap_dir)})


def open_disk(disk: DiskLocator) -> DiskSource:
    from diskio.local import open_local_source

    assert disk.path is not None
    return open_local_source(disk.path, disk.format)


def delete_snapshot(cloud: Cloud, snapshot: SourceSnapshot) -> None:
    if snapshot.details.get("created"):
        with contextlib.suppress(NotFound):
            cloud.request("image", "DELETE", f"/v2/images/{snapshot.snapshot_id}")
    if snapshot.details.get("dir"):
        shutil.rmtree(snapshot.details["dir"], ignore_errors=True)
