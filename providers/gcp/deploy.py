"""Images from the uploaded tarballs, then the instance with the mapped machine type, subnetwork and disks.

Names are derived from the migration id, so a retried activity finds what an earlier attempt
created (409 ``alreadyExists`` → the existing resource, if it carries this migration's label).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from typing import Any

from core.errors import InvalidInput, NotFound, ProviderTransient
from core.models import DeployedInstance, ImportedDisk, InstanceInfo
from core.polling import poll_until
from providers.base import ActionContext
from providers.gcp.connection import GcpConnection, gcp_errors
from providers.gcp.upload import instance_key, safe

MIGRATION_LABEL = "sterna-migration-id"
#: the action's instance that made an image or an instance (``upload.instance_key``): its cleanup's scope
INSTANCE_LABEL = "sterna-instance"
ROLE_LABEL = "sterna-role"


def zone_of(conn: GcpConnection, env: Mapping[str, Any]) -> str:
    return str(env.get("zone") or conn.zone)


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def check_zone(conn: GcpConnection, zone: str) -> None:
    try:
        with gcp_errors(f"looking up zone {zone}", conn.secrets):
            conn.compute("ZonesClient").get(project=conn.project, zone=zone)
    except (NotFound, InvalidInput):
        raise InvalidInput(f"unknown zone '{zone}' in project {conn.project}") from None


def choose_machine_type(conn: GcpConnection, env: Mapping[str, Any], info: InstanceInfo, zone: str) -> str:
    """The env's ``machine_type`` (checked), else the smallest listed type with the CPUs and memory."""
    client = conn.compute("MachineTypesClient")
    wanted = env.get("machine_type") or env.get("flavor_name")
    if wanted:
        try:
            with gcp_errors(f"looking up machine type {wanted}", conn.secrets):
                client.get(project=conn.project, zone=zone, machine_type=str(wanted))
        except (NotFound, InvalidInput):
            raise InvalidInput(f"unknown machine type '{wanted}' in zone {zone}") from None
        return str(wanted)
    with gcp_errors(f"listing machine types of {zone}", conn.secrets):
        types = list(client.list(project=conn.project, zone=zone))
    fits = [t for t in types if t.guest_cpus >= info.num_cpu and t.memory_mb >= info.memory_mb]
    if not fits:
        raise InvalidInput(f"no machine type in {zone} has {info.num_cpu} vCPUs and {info.memory_mb} MiB")
    return str(min(fits, key=lambda t: (t.guest_cpus, t.memory_mb, t.name)).name)


def plan_nics(conn: GcpConnection, env: Mapping[str, Any], network_map: Mapping[str, Any], info: InstanceInfo,
              zone: str) -> list[dict[str, Any]]:
    """One NIC per source NIC (at least one), on the subnetwork ``network_map`` names, checked to exist."""
    mapping = dict(network_map)
    region = region_of(zone)
    nics = info.devices.nics or []
    sources = [n.network_name for n in nics] or ["default"]
    out = []
    client = conn.compute("SubnetworksClient")
    for net in sources:
        entry = mapping.get(net, mapping.get("default"))
        if entry is None:
            raise InvalidInput(f"network_map has no subnetwork for source network '{net}' (nor a 'default')")
        sub = entry.get("subnetwork") if isinstance(entry, dict) else entry
        name = str(sub).rsplit("/", 1)[-1]
        try:
            with gcp_errors(f"looking up subnetwork {name}", conn.secrets):
                client.get(project=conn.project, region=region, subnetwork=name)
        except (NotFound, InvalidInput):
            raise InvalidInput(f"unknown subnetwork '{name}' in region {region} (network_map['{net}'])") from None
        nic: dict[str, Any] = {"subnetwork": f"projects/{conn.project}/regions/{region}/subnetworks/{name}"}
        if env.get("nic_type"):
            nic["nic_type"] = str(env["nic_type"])
        out.append(nic)
    return out


def image_name(migration: str, key: str, disk_id: str) -> str:
    """One image per disk of each instance (``key``): two VMs' ``disk-0`` are two images."""
    digest = hashlib.sha256(f"{migration}/{key}/{disk_id}".encode()).hexdigest()[:10]
    return f"sterna-{digest}-{safe(disk_id)[:40]}".rstrip("-")


def instance_name(action: ActionContext, info: InstanceInfo) -> str:
    name = safe(str(action.instance_name or info.name))[:63].rstrip("-")
    return name if name[:1].isalpha() else f"vm-{name}"[:63].rstrip("-")


def guest_os_features(info: InstanceInfo) -> list[str]:
    features = ["VIRTIO_SCSI_MULTIQUEUE", "GVNIC"]
    if info.firmware_type == "EFI":
        features.append("UEFI_COMPATIBLE")
    if info.os_type == "windows":
        features.append("WINDOWS")
    return features


def create_image(conn: GcpConnection, info: InstanceInfo, disk: ImportedDisk, migration: str, key: str) -> str:
    from google.cloud import compute_v1

    name = image_name(migration, key, disk.disk_id)
    client = conn.compute("ImagesClient")
    image = compute_v1.Image(
        name=name, raw_disk=compute_v1.RawDisk(source=disk.details["source"]),
        guest_os_features=[compute_v1.GuestOsFeature(type_=f) for f in guest_os_features(info)],
        labels={MIGRATION_LABEL: migration, INSTANCE_LABEL: key, ROLE_LABEL: "image"},
        description=f"Sterna import of disk {disk.disk_id} of {info.name}"[:2048],
    )

    def insert() -> Any:
        """The insert operation; ``name`` if an earlier attempt's image is READY; None to try again."""
        try:
            with gcp_errors(f"creating image {name}", conn.secrets):
                return client.insert_unary(project=conn.project, image_resource=image)
        except InvalidInput as exists:
            # 409 alreadyExists: an earlier attempt's image. Ours (by label) → wait until it is READY.
            try:
                with gcp_errors(f"reading image {name}", conn.secrets):
                    existing = client.get(project=conn.project, image=name)
            except NotFound:
                return None  # its failed insert just removed it: insert again
            if (existing.labels.get(MIGRATION_LABEL), existing.labels.get(INSTANCE_LABEL)) != (migration, key) \
                    or existing.status not in ("READY", "PENDING"):
                raise exists
            return name if existing.status == "READY" else None

    op = poll_until(time.monotonic() + 3600, 2, insert)
    if op is None:
        raise ProviderTransient(f"image {name} of an earlier attempt was not READY within an hour")
    if isinstance(op, str):
        return op
    conn.wait(op, f"creating image {name} from {disk.details['source']}")
    return name


def deploy_instance(conn: GcpConnection, env: Mapping[str, Any], info: InstanceInfo,
                    disks: list[ImportedDisk], action: ActionContext) -> DeployedInstance:
    from google.cloud import compute_v1

    if not disks:
        raise InvalidInput(f"instance {info.name} has no disk to deploy")
    zone = zone_of(conn, env)
    check_zone(conn, zone)
    machine_type = choose_machine_type(conn, env, info, zone)
    nics = plan_nics(conn, env, action.network_map, info, zone)
    migration, key = action.action_id or "adhoc", instance_key(action, info.name)
    images = [create_image(conn, info, d, migration, key) for d in disks]
    name = instance_name(action, info)
    disk_type = str(env.get("disk_type") or "pd-balanced")
    attached = [compute_v1.AttachedDisk(
        boot=i == 0, auto_delete=True, device_name=f"disk-{i}",
        initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image=f"projects/{conn.project}/global/images/{image}",
            disk_type=f"zones/{zone}/diskTypes/{disk_type}"),
    ) for i, image in enumerate(images)]
    instance = compute_v1.Instance(
        name=name, machine_type=f"zones/{zone}/machineTypes/{machine_type}", disks=attached,
        network_interfaces=[compute_v1.NetworkInterface(**nic) for nic in nics],
        labels={MIGRATION_LABEL: migration, INSTANCE_LABEL: key, ROLE_LABEL: "instance"},
        tags=compute_v1.Tags(items=[str(t) for t in env.get("network_tags") or []]),
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="serial-port-enable", value="TRUE")]),
    )
    client = conn.compute("InstancesClient")
    try:
        with gcp_errors(f"creating instance {name} ({machine_type}) in {zone}", conn.secrets):
            op = client.insert_unary(project=conn.project, zone=zone, instance_resource=instance)
        conn.wait(op, f"creating instance {name} in {zone}")
    except InvalidInput:
        existing = find_instance(conn, zone, name)
        if existing is None or existing.labels.get(MIGRATION_LABEL) != migration \
                or existing.labels.get(INSTANCE_LABEL) not in (key, None):  # None: made before the label
            raise
    with gcp_errors(f"reading instance {name}", conn.secrets):
        created = client.get(project=conn.project, zone=zone, instance=name)
    return DeployedInstance(instance=info.name, id=str(created.id), name=name, details={
        "zone": zone, "machine_type": machine_type, "images": images,
        "subnetworks": [n.subnetwork.rsplit("/", 1)[-1] for n in created.network_interfaces],
        "status": created.status})


def find_instance(conn: GcpConnection, zone: str, name: str) -> Any:
    try:
        with gcp_errors(f"reading instance {name}", conn.secrets):
            return conn.compute("InstancesClient").get(project=conn.project, zone=zone, instance=name)
    except NotFound:
        return None
