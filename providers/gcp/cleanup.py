"""Removal of what one instance of an action created: by the names it recorded and by its labels and object
folder, so that a cancel before anything was recorded still leaves nothing. A sibling instance of the same
migration (or deployment) is never touched: its upload or its deploy may be under way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import NotFound, SternaError
from core.models import DeployedInstance, ImportedDisk
from providers.gcp.connection import GcpConnection, gcp_errors
from providers.gcp.deploy import INSTANCE_LABEL, MIGRATION_LABEL, zone_of
from providers.gcp.upload import bucket_of, object_folder


def cleanup(conn: GcpConnection, env: Mapping[str, Any], disks: list[ImportedDisk],
            deployed: DeployedInstance | None, succeeded: bool, migration: str, key: str) -> list[str]:
    """``key``: the instance's (``upload.instance_key``); only what carries it, or was recorded, goes."""
    done: list[str] = []
    if not succeeded:
        done += _delete_instances(conn, env, migration, key, deployed)
    if not succeeded or not env.get("keep_image"):
        done += _delete_images(conn, migration, key, deployed)
    if not env.get("keep_tarball"):
        done += _delete_objects(conn, env, migration, key, disks)
    return done


def _ours(labels: Mapping[str, str], migration: str, key: str) -> bool:
    return bool(migration) and labels.get(MIGRATION_LABEL) == migration and labels.get(INSTANCE_LABEL) == key


def _delete_instances(conn: GcpConnection, env: Mapping[str, Any], migration: str, key: str,
                      deployed: DeployedInstance | None) -> list[str]:
    zone = str((deployed.details.get("zone") if deployed else None) or zone_of(conn, env))
    client = conn.compute("InstancesClient")
    with gcp_errors(f"listing instances in {zone}", conn.secrets):
        found = [i.name for i in client.list(project=conn.project, zone=zone)
                 if _ours(i.labels, migration, key) or (deployed is not None and i.name == deployed.name)]
    done = []
    for name in found:
        try:
            with gcp_errors(f"deleting instance {name}", conn.secrets):
                op = client.delete_unary(project=conn.project, zone=zone, instance=name)
            conn.wait(op, f"deleting instance {name}")
            done.append(f"Instance {name} and its disks deleted")
        except NotFound:
            pass
    return done


def _delete_images(conn: GcpConnection, migration: str, key: str, deployed: DeployedInstance | None) -> list[str]:
    if not migration:
        return []
    client = conn.compute("ImagesClient")
    with gcp_errors("listing this instance's images", conn.secrets):
        images = {i.name for i in client.list(request={"project": conn.project,
                                                      "filter": f"labels.{MIGRATION_LABEL} = {migration}"})
                  if _ours(i.labels, migration, key)}
    images |= set((deployed.details.get("images") or []) if deployed else [])
    done = []
    for name in sorted(images):
        try:
            with gcp_errors(f"deleting image {name}", conn.secrets):
                op = client.delete_unary(project=conn.project, image=name)
            conn.wait(op, f"deleting image {name}")
            done.append(f"Image {name} deleted")
        except NotFound:
            pass
    return done


def _delete_objects(conn: GcpConnection, env: Mapping[str, Any], migration: str, key: str,
                    disks: list[ImportedDisk]) -> list[str]:
    try:
        bucket = bucket_of(conn, env)
    except SternaError:
        return []
    names = {str(d.details["object"]) for d in disks if d.details.get("object")}
    storage = conn.storage()
    folder = object_folder(migration, key)
    with gcp_errors(f"listing gs://{bucket}/{folder}", conn.secrets):
        if migration:
            names |= {b.name for b in storage.list_blobs(bucket, prefix=folder)}
    done = []
    for name in sorted(names):
        try:
            with gcp_errors(f"deleting gs://{bucket}/{name}", conn.secrets):
                storage.bucket(bucket).delete_blob(name)
            done.append(f"Object gs://{bucket}/{name} deleted")
        except NotFound:
            pass
    return done
