"""Remove what the destination side created for one instance, found by ids and by its marks.

On success nothing goes. On failure or cancel the instance's server and uploaded images go; the
migration id and the source instance's name on them make this work after a crash, when the ids never
reached the workflow, and keep a sibling instance of the same migration (uploading or deploying right
now) out of it. Resources already gone count as removed, so cleanup can run twice.
"""

from __future__ import annotations

from typing import Any

from core.errors import NotFound
from core.models import DeployedInstance, ImportedDisk
from providers.base import ActionContext
from providers.openstack import tags as t
from providers.openstack.cloud import Cloud
from providers.openstack.instances import servers


def cleanup(cloud: Cloud, disks: list[ImportedDisk], deployed: DeployedInstance | None, succeeded: bool,
            action: ActionContext) -> list[str]:
    if succeeded:
        return []
    removed = []
    migration_id, source = t.migration_id(action), action.source_name

    def marked(item: dict[str, Any]) -> bool:
        return bool(migration_id and source) and (item.get(t.MIGRATION_KEY), item.get(t.SOURCE_KEY)) == (
            migration_id, source)

    ours = [s for s in servers(cloud) if (s["id"] == deployed.id if deployed is not None
                                          else marked(s.get("metadata") or {}))]
    for s in ours:
        try:
            cloud.request("compute", "DELETE", f"/servers/{s['id']}")
            removed.append(f"Deleted server {s['id']} ({s['name']})")
        except NotFound:
            pass
    image_ids = {d.details["image_id"] for d in disks if d.details.get("image_id")}
    images = cloud.request("image", "GET", f"/v2/images?tag={t.IMAGE_TAG}&limit=1000")["images"]
    image_ids |= {i["id"] for i in images if marked(i)}
    for image_id in sorted(image_ids):
        try:
            cloud.request("image", "DELETE", f"/v2/images/{image_id}")
            removed.append(f"Deleted Glance image {image_id}")
        except NotFound:
            pass
    return removed
