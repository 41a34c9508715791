"""Remove what the destination side created, found by ids and by the migration id.

On success nothing goes. On failure or cancel the server and every uploaded image go; the
migration id on them makes this work after a crash, when the ids never reached the workflow.
Resources already gone count as removed, so cleanup can run twice.
"""

from __future__ import annotations

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
    migration_id = t.migration_id(action)
    ours = [s for s in servers(cloud) if t.server_migration(s) == migration_id
            and (deployed is None or s["id"] == deployed.id)]
    for s in ours:
        try:
            cloud.request("compute", "DELETE", f"/servers/{s['id']}")
            removed.append(f"Deleted server {s['id']} ({s['name']})")
        except NotFound:
            pass
    image_ids = {d.details["image_id"] for d in disks if d.details.get("image_id")}
    images = cloud.request("image", "GET", f"/v2/images?tag={t.IMAGE_TAG}&limit=1000")["images"]
    image_ids |= {i["id"] for i in images if i.get(t.MIGRATION_KEY) == migration_id}
    for image_id in sorted(image_ids):
        try:
            cloud.request("image", "DELETE", f"/v2/images/{image_id}")
            removed.append(f"Deleted Glance image {image_id}")
        except NotFound:
            pass
    return removed
