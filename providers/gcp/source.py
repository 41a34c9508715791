"""GCE as a migration source: inventory, a snapshot of every disk, its bytes through an image export to GCS.

GCE has no block-read API (nothing like EBS direct). The two ways to a snapshot's bytes are an
image export to GCS and a helper instance serving the disk over NBD. This module takes the
export, for now, because it needs nothing inside the source VPC (no helper VM to boot from a
public image, no firewall rule or tunnel from the worker to it) and is what
``gcloud compute images export`` does:

1. ``disks.createSnapshot`` of each disk (crash-consistent; ``shutdown_instances`` stops the
   instance first for a clean one);
2. ``images.insert`` with ``sourceSnapshot`` (the exporter takes images, not snapshots);
3. a Cloud Build build running the ``gce_vm_image_export`` Daisy workflow, which writes the image
   as ``disk.raw`` in a gzip'd tar into the staging bucket (``sterna/<action>/export/``);
4. ``open_disk`` streams that object through the disk engine (``tarsource``): nothing is staged.

Its costs, accepted for now: the Cloud Build API and its service account's roles, a full read of
every disk into a compressed object, and no incremental transfer (a helper instance with NBD
would allow changed-block reads against the previous snapshot; see the README). Everything made
carries the action's label (``sterna-migration-id``) or prefix, and ``delete_snapshot`` removes
it by name, so a retry finds what an earlier attempt made and cleanup leaves nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from core.errors import AuthenticationFailed, InvalidInput, NotFound, ProviderError, ProviderTransient
from core.models import Devices, DiskInfo, DiskLocator, InstanceInfo, NicInfo, SourceSnapshot
from core.polling import poll_until
from providers.base import ActionContext
from providers.gcp.connection import GcpConnection, gcp_errors, redact
from providers.gcp.deploy import MIGRATION_LABEL, ROLE_LABEL, zone_of
from providers.gcp.tarsource import TarballDiskSource
from providers.gcp.upload import bucket_of, safe

GIB = 1024**3
#: the builder ``gcloud compute images export`` runs (a Daisy workflow; it boots its own scratch VM)
EXPORT_BUILDER = "gcr.io/compute-image-tools/gce_vm_image_export:release"
EXPORT_TIMEOUT = 7200
_BUILD_DONE = {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"}


# -- inventory ----------------------------------------------------------------------------------

def _instance(conn: GcpConnection, zone: str, name: str) -> Any:
    with gcp_errors(f"reading instance {name} in {zone}", conn.secrets):
        return conn.compute("InstancesClient").get(project=conn.project, zone=zone, instance=name)


def instance_info(conn: GcpConnection, zone: str, inst: Any) -> InstanceInfo:
    mtype = inst.machine_type.rsplit("/", 1)[-1]
    with gcp_errors(f"reading machine type {mtype}", conn.secrets):
        machine = conn.compute("MachineTypesClient").get(project=conn.project, zone=zone, machine_type=mtype)
    disks, features = [], set()
    for i, att in enumerate(inst.disks):
        disk = _disk(conn, zone, att.source.rsplit("/", 1)[-1])
        disks.append(DiskInfo(id=att.device_name or disk.name, size_bytes=int(disk.size_gb) * GIB, unit_number=i,
                              storage_backend_identifier=disk.type_.rsplit("/", 1)[-1] or None))
        if att.boot:
            features = {f.type_ for f in att.guest_os_features}
    nics = [NicInfo(network_name=n.network.rsplit("/", 1)[-1], mac_address="", id=n.name, name=n.name,
                    ip_addresses=[n.network_i_p] if n.network_i_p else []) for n in inst.network_interfaces]
    return InstanceInfo(
        id=str(inst.id), name=inst.name, instance_name=inst.name, num_cpu=machine.guest_cpus,
        memory_mb=machine.memory_mb, flavor_name=mtype, hostname=inst.hostname or inst.name,
        os_type="windows" if "WINDOWS" in features else "linux",
        firmware_type="EFI" if "UEFI_COMPATIBLE" in features else "BIOS",
        power_state=inst.status, devices=Devices(disks=disks, nics=nics))


def _disk(conn: GcpConnection, zone: str, name: str) -> Any:
    with gcp_errors(f"reading disk {name} in {zone}", conn.secrets):
        return conn.compute("DisksClient").get(project=conn.project, zone=zone, disk=name)


def list_instances(conn: GcpConnection, env: Mapping[str, Any], name_filter: str | None) -> list[InstanceInfo]:
    zone = zone_of(conn, env)
    with gcp_errors(f"listing instances in {zone}", conn.secrets):
        found = list(conn.compute("InstancesClient").list(project=conn.project, zone=zone))
    return [instance_info(conn, zone, i) for i in found
            if not name_filter or name_filter in i.name or name_filter == str(i.id)]


def get_instance(conn: GcpConnection, env: Mapping[str, Any], name: str) -> InstanceInfo:
    zone = zone_of(conn, env)
    return instance_info(conn, zone, _instance(conn, zone, name))


def shutdown_instance(conn: GcpConnection, env: Mapping[str, Any], name: str) -> None:
    zone = zone_of(conn, env)
    if _instance(conn, zone, name).status in ("TERMINATED", "STOPPED", "SUSPENDED"):
        return
    with gcp_errors(f"stopping instance {name}", conn.secrets):
        op = conn.compute("InstancesClient").stop_unary(project=conn.project, zone=zone, instance=name)
    conn.wait(op, f"stopping instance {name}")


# -- snapshot -----------------------------------------------------------------------------------

def resource_name(action: str, instance: str, disk: str) -> str:
    """Snapshots and images of one action's disk: derived, so that a retry finds an earlier attempt's."""
    digest = hashlib.sha256(f"{action}/{instance}/{disk}".encode()).hexdigest()[:10]
    return f"sterna-src-{digest}-{safe(disk)[:36]}".rstrip("-")


def _labels(action: str, role: str) -> dict[str, str]:
    return {MIGRATION_LABEL: action, ROLE_LABEL: role}


def _insert_or_take(insert: Any, get: Any, what: str, action: str) -> Any:
    """The insert's operation, or None when an earlier attempt's resource (ours, by label) exists."""
    try:
        return insert()
    except InvalidInput as exists:
        try:
            existing = get()
        except NotFound:
            raise exists from None  # not a 409 (a 400 maps to InvalidInput too): the insert's own error
        if existing.labels.get(MIGRATION_LABEL) != action:
            raise InvalidInput(f"{what} exists and is not this migration's: {exists}") from None
        return None


def _wait_ready(get: Any, what: str) -> None:
    def ready() -> bool | None:
        status = get().status
        if status in ("FAILED", "DELETING"):
            raise ProviderError(f"{what} is {status}")
        return True if status == "READY" else None

    if poll_until(time.monotonic() + 3600, 2, ready) is None:
        raise ProviderTransient(f"{what} was not READY within an hour")


def snapshot_instance(conn: GcpConnection, env: Mapping[str, Any], instance: str, workdir: Path,
                      action: ActionContext) -> SourceSnapshot:
    """Snapshot, image and export of every disk. A failure removes what this call made: the workflow
    only knows a snapshot that was returned, and a retry makes it all again from its derived names."""
    zone = zone_of(conn, env)
    bucket = bucket_of(conn, env)
    act = action.action_id or "adhoc"
    inst = _instance(conn, zone, instance)
    names = [resource_name(act, instance, att.source.rsplit("/", 1)[-1]) for att in inst.disks]
    try:
        return _snapshot(conn, zone, bucket, act, inst, instance, workdir)
    except Exception:
        with contextlib.suppress(Exception):
            delete_snapshot(conn, SourceSnapshot(instance=instance, snapshot_id="partial", disks=[],
                                                 details={"bucket": bucket, "resources": names}))
        raise


def _snapshot(conn: GcpConnection, zone: str, bucket: str, act: str, inst: Any, instance: str,
              workdir: Path) -> SourceSnapshot:
    from google.cloud import compute_v1

    snapshots, images = conn.compute("SnapshotsClient"), conn.compute("ImagesClient")
    disks, made = [], []
    for att in inst.disks:
        disk_name = att.source.rsplit("/", 1)[-1]
        disk = _disk(conn, zone, disk_name)
        name = resource_name(act, instance, disk_name)
        # 1. the snapshot (crash-consistent unless the instance was stopped first)
        snap_body = compute_v1.Snapshot(name=name, labels=_labels(act, "source-snapshot"),
                                        description=f"Sterna snapshot of {disk_name} of {instance}")

        def insert_snapshot(body: Any = snap_body, disk_name: str = disk_name) -> Any:
            with gcp_errors(f"snapshotting disk {disk_name}", conn.secrets):
                return conn.compute("DisksClient").create_snapshot_unary(
                    project=conn.project, zone=zone, disk=disk_name, snapshot_resource=body)

        def get_snapshot(name: str = name) -> Any:
            with gcp_errors(f"reading snapshot {name}", conn.secrets):
                return snapshots.get(project=conn.project, snapshot=name)

        op = _insert_or_take(insert_snapshot, get_snapshot, f"snapshot {name}", act)
        if op is not None:
            conn.wait(op, f"snapshotting disk {disk_name}")
        _wait_ready(get_snapshot, f"snapshot {name}")
        # 2. an image of it: what the exporter reads
        image_body = compute_v1.Image(name=name, source_snapshot=f"projects/{conn.project}/global/snapshots/{name}",
                                      labels=_labels(act, "source-image"))

        def insert_image(body: Any = image_body) -> Any:
            with gcp_errors(f"creating image {body.name} from its snapshot", conn.secrets):
                return images.insert_unary(project=conn.project, image_resource=body)

        def get_image(name: str = name) -> Any:
            with gcp_errors(f"reading image {name}", conn.secrets):
                return images.get(project=conn.project, image=name)

        op = _insert_or_take(insert_image, get_image, f"image {name}", act)
        if op is not None:
            conn.wait(op, f"creating image {name}")
        _wait_ready(get_image, f"image {name}")
        made.append(name)
        # 3. the export into the bucket
        obj = f"sterna/{act}/export/{safe(instance)}-{safe(disk_name)}.tar.gz"
        export(conn, bucket, name, obj, workdir / "gcp-export" / f"{safe(disk_name)}.json")
        disks.append(DiskLocator(disk_id=att.device_name or disk_name, size_bytes=int(disk.size_gb) * GIB,
                                 format="raw", details={"bucket": bucket, "object": obj, "image": name,
                                                        "snapshot": name, "disk": disk_name}))
    return SourceSnapshot(instance=instance, snapshot_id=f"gcp:{conn.project}:{act}:{instance}", disks=disks,
                          details={"zone": zone, "bucket": bucket, "action": act, "resources": made,
                                   "objects": [d.details["object"] for d in disks]})


def export(conn: GcpConnection, bucket: str, image: str, obj: str, state: Path) -> None:
    """Run (or follow an earlier attempt's) image export build until ``gs://bucket/obj`` exists."""
    storage = conn.storage()
    with gcp_errors(f"looking for gs://{bucket}/{obj}", conn.secrets):
        if storage.bucket(bucket).get_blob(obj) is not None:
            return
    build_id = None
    try:
        saved = json.loads(state.read_text())
        build_id = saved["build"] if saved.get("object") == obj else None
    except (OSError, ValueError, KeyError):
        pass
    session = conn.authorized_session()
    root = f"{conn.cloudbuild_endpoint.rstrip('/')}/v1/projects/{conn.project}/builds"
    if build_id is not None and _build(conn, session, root, build_id)["status"] not in ("QUEUED", "WORKING"):
        build_id = None  # finished without the object (failed, cancelled): a new export
    if build_id is None:
        body = {"steps": [{"name": EXPORT_BUILDER, "args": [
                    f"-timeout={EXPORT_TIMEOUT - 200}s", f"-source_image=projects/{conn.project}/global/images/{image}",
                    "-client_id=api", "-format=", f"-destination_uri=gs://{bucket}/{obj}"],
                    "env": ["BUILD_ID=$BUILD_ID"]}],
                "tags": ["gce-daisy", "gce-daisy-image-export", "sterna"], "timeout": f"{EXPORT_TIMEOUT}s"}
        reply = _call(conn, session, "POST", root, f"starting the export of image {image}", json=body)
        build_id = str(reply["metadata"]["build"]["id"])
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"object": obj, "build": build_id}))

    def finished() -> dict[str, Any] | None:
        build = _build(conn, session, root, build_id)
        return build if build["status"] in _BUILD_DONE else None

    build = poll_until(time.monotonic() + EXPORT_TIMEOUT, 2, finished)
    if build is None:
        raise ProviderTransient(f"the export of image {image} (build {build_id}) did not end in {EXPORT_TIMEOUT} s")
    if build["status"] != "SUCCESS":
        detail = (build.get("failureInfo") or {}).get("detail") or build.get("statusDetail") or ""
        message = (f"the export of image {image} to gs://{bucket}/{obj} ended {build['status']} "
                   f"(Cloud Build {build_id}): {redact(detail, conn.secrets)}")
        if build["status"] in ("INTERNAL_ERROR", "TIMEOUT", "EXPIRED"):
            raise ProviderTransient(message)
        # A failed step is almost always configuration (the Cloud Build account's roles, an
        # org policy), which no retry fixes: said at once, with what to check.
        raise InvalidInput(f"{message}; the project's Cloud Build service account needs roles/compute.admin "
                           "and roles/iam.serviceAccountUser for image exports")
    state.unlink(missing_ok=True)


def _build(conn: GcpConnection, session: Any, root: str, build_id: str) -> dict[str, Any]:
    return _call(conn, session, "GET", f"{root}/{build_id}", f"reading export build {build_id}")


def _call(conn: GcpConnection, session: Any, method: str, url: str, doing: str, **kw: Any) -> dict[str, Any]:
    with gcp_errors(doing, conn.secrets):
        resp = session.request(method, url, timeout=60, **kw)
    if resp.status_code < 300:
        return dict(resp.json())
    try:
        message = str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = resp.text[:300]
    message = f"{doing}: Cloud Build answered {resp.status_code}: {redact(message, conn.secrets)}"
    if resp.status_code in (401, 403):
        raise AuthenticationFailed(message)
    if resp.status_code == 404:
        raise NotFound(message)
    if resp.status_code == 429 or resp.status_code >= 500:
        raise ProviderTransient(message)
    raise InvalidInput(message)


def open_disk(conn: GcpConnection, snapshot: SourceSnapshot, disk: DiskLocator) -> TarballDiskSource:
    bucket, obj = str(disk.details["bucket"]), str(disk.details["object"])
    blob = conn.storage().bucket(bucket).blob(obj)

    def open_stream() -> IO[bytes]:
        with gcp_errors(f"opening gs://{bucket}/{obj}", conn.secrets):
            return blob.open("rb", chunk_size=8 * 1024 * 1024)  # type: ignore[no-any-return]

    with gcp_errors(f"reading gs://{bucket}/{obj}", conn.secrets):
        return TarballDiskSource(open_stream, disk.size_bytes, f"gs://{bucket}/{obj}")


def delete_snapshot(conn: GcpConnection, snapshot: SourceSnapshot) -> None:
    """The exported objects, the images and the snapshots; tolerates any of them being gone."""
    bucket = str(snapshot.details["bucket"])
    for obj in snapshot.details.get("objects") or []:
        try:
            with gcp_errors(f"deleting gs://{bucket}/{obj}", conn.secrets):
                conn.storage().bucket(bucket).delete_blob(obj)
        except NotFound:
            pass
    for name in snapshot.details.get("resources") or []:
        for kind, client, field in (("image", "ImagesClient", "image"), ("snapshot", "SnapshotsClient", "snapshot")):
            try:
                with gcp_errors(f"deleting {kind} {name}", conn.secrets):
                    op = conn.compute(client).delete_unary(project=conn.project, **{field: name})
                conn.wait(op, f"deleting {kind} {name}")
            except NotFound:
                pass
