"""Remove what the destination side created for one instance, found by ids and by its tags.

On success only the scaffolding goes (the AMI and the uploaded snapshots; the instance
and its volumes stay). On failure or cancel everything goes: instance, volumes, AMI,
snapshots. Tags make this work after a crash, when the ids never reached the workflow: the
migration's id and the source instance's name, so that a sibling instance of the same migration,
which may be uploading or deploying right now, is never touched.
Every step tolerates resources that are already gone, so cleanup can run twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.errors import NotFound, ProviderError
from core.models import DeployedInstance, ImportedDisk
from providers.aws import tags as t
from providers.aws.errors import aws_errors, error_code
from providers.aws.session import AwsClients


class _Cleaner:
    def __init__(self, clients: AwsClients, migration: str | None, source: str | None) -> None:
        self.clients = clients
        self.ec2 = clients.ec2
        self.migration = migration
        self.source = source
        self.secrets = clients.conn.secrets
        self.lines: list[str] = []

    def _call(self, action: str, fn: Any, **kwargs: Any) -> Any:
        """One AWS call; "already gone" counts as done, other failures are reported, not raised."""
        try:
            with aws_errors(action, self.secrets):
                return fn(**kwargs)
        except NotFound:
            return None
        except ProviderError as exc:
            self.lines.append(f"could not finish {action}: {exc.message}")
            return None

    def tagged_ids(self, kind: str, role: str) -> list[str]:
        if not (self.migration and self.source):
            return []
        kw: dict[str, Any] = {"Filters": t.filters({t.MIGRATION_TAG: self.migration, t.ROLE_TAG: role,
                                                     t.SOURCE_INSTANCE_TAG: self.source})}
        if kind == "instance":
            kw["Filters"].append(
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}
            )
            resp = self._call("listing instances", self.ec2.describe_instances, **kw) or {"Reservations": []}
            return [i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"]]
        if kind == "volume":
            resp = self._call("listing volumes", self.ec2.describe_volumes, **kw) or {"Volumes": []}
            return [v["VolumeId"] for v in resp["Volumes"]]
        if kind == "image":
            resp = self._call("listing images", self.ec2.describe_images, Owners=["self"], **kw) or {
                "Images": []
            }
            return [i["ImageId"] for i in resp["Images"]]
        resp = self._call("listing snapshots", self.ec2.describe_snapshots, OwnerIds=["self"], **kw)
        return [s["SnapshotId"] for s in (resp or {"Snapshots": []})["Snapshots"]]

    def terminate(self, instance_ids: set[str]) -> None:
        if not instance_ids:
            return
        # One call per instance: a single unknown id would fail a batched call for all of them.
        ids = [
            i
            for i in sorted(instance_ids)
            if self._call(f"terminating {i}", self.ec2.terminate_instances, InstanceIds=[i]) is not None
        ]
        if not ids:
            return
        self._call(
            "waiting for termination",
            self.clients.wait,
            waiter="instance_terminated",
            delay=5,
            timeout=600,
            InstanceIds=ids,
        )
        self.lines.extend(f"terminated instance {i}" for i in ids)

    def delete_volumes(self, volume_ids: set[str]) -> None:
        for volume_id in sorted(volume_ids):
            resp = self._call(
                f"describing volume {volume_id}", self.ec2.describe_volumes, VolumeIds=[volume_id]
            )
            if not resp or not resp["Volumes"]:
                continue
            volume = resp["Volumes"][0]
            if volume["State"] == "in-use":
                self._call(
                    f"detaching volume {volume_id}", self.ec2.detach_volume, VolumeId=volume_id, Force=True
                )
                self._call(
                    f"waiting for volume {volume_id}",
                    self.clients.wait,
                    waiter="volume_available",
                    delay=3,
                    timeout=300,
                    VolumeIds=[volume_id],
                )
            before = len(self.lines)
            self._call(f"deleting volume {volume_id}", self.ec2.delete_volume, VolumeId=volume_id)
            if len(self.lines) == before:
                self.lines.append(f"deleted volume {volume_id}")

    def deregister_images(self, image_ids: set[str]) -> set[str]:
        """Deregister; returns the snapshots those images referenced (they belong to the image)."""
        backing: set[str] = set()
        for image_id in sorted(image_ids):
            resp = self._call(f"describing image {image_id}", self.ec2.describe_images, ImageIds=[image_id])
            if not resp or not resp["Images"]:
                continue
            for mapping in resp["Images"][0].get("BlockDeviceMappings", []):
                if mapping.get("Ebs", {}).get("SnapshotId"):
                    backing.add(mapping["Ebs"]["SnapshotId"])
            before = len(self.lines)
            self._call(f"deregistering image {image_id}", self.ec2.deregister_image, ImageId=image_id)
            if len(self.lines) == before:
                self.lines.append(f"deregistered image {image_id}")
        return backing

    def delete_snapshots(self, snapshot_ids: set[str]) -> None:
        for snapshot_id in sorted(snapshot_ids):
            try:
                with aws_errors(f"deleting snapshot {snapshot_id}", self.secrets):
                    try:
                        self.ec2.delete_snapshot(SnapshotId=snapshot_id)
                    except Exception as exc:
                        if error_code(exc) in ("InvalidSnapshot.NotFound", "InvalidSnapshotID.NotFound"):
                            continue
                        raise
            except ProviderError as exc:
                # A pending EBS-direct snapshot that can't be deleted yet is cancelled by AWS
                # itself once its StartSnapshot Timeout passes.
                self.lines.append(f"could not delete snapshot {snapshot_id}: {exc.message}")
                continue
            except NotFound:
                continue
            self.lines.append(f"deleted snapshot {snapshot_id}")


def cleanup(
    clients: AwsClients,
    env: Mapping[str, Any],
    disks: list[ImportedDisk],
    deployed: DeployedInstance | None,
    succeeded: bool,
    migration: str | None,
    source: str | None,
) -> list[str]:
    """See the module docstring; returns task-event lines. ``source``: the source instance's name, which
    its resources are tagged with (``ActionContext.source_name``)."""
    c = _Cleaner(clients, migration, source)
    details = deployed.details if deployed else {}
    if not succeeded:
        instances = set(c.tagged_ids("instance", t.ROLE_INSTANCE))
        if deployed and deployed.id:
            instances.add(deployed.id)
        c.terminate(instances)
        volumes = set(c.tagged_ids("volume", t.ROLE_VOLUME)) | set((details.get("volumes") or {}).values())
        c.delete_volumes(volumes)
    if not succeeded or not env.get("keep_image"):
        images = set(c.tagged_ids("image", t.ROLE_IMAGE))
        if details.get("image_id"):
            images.add(details["image_id"])
        backing = c.deregister_images(images)
        snapshots = set(c.tagged_ids("snapshot", t.ROLE_IMPORT_SNAPSHOT)) | backing
        snapshots |= {d.details["snapshot_id"] for d in disks if d.details.get("snapshot_id")}
        snapshots |= set(details.get("snapshot_ids") or [])
        c.delete_snapshots(snapshots)
    return c.lines
