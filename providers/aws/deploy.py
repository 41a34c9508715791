"""Destination control path: AMI from the boot snapshot, the instance, extra volumes, boot check.

Every resource is tagged with the migration id and a role, and each step first looks for
what an earlier attempt of the same migration created, so a retried activity never
launches a second instance.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from core.errors import InvalidInput, ProviderError
from core.models import DeployedInstance, ImportedDisk, InstanceInfo
from core.polling import poll_until
from providers.aws import flavors
from providers.aws import tags as t
from providers.aws.errors import Secrets, aws_errors, error_code
from providers.aws.mapping import NicPlan, plan_nics, volume_params, volume_type_for
from providers.aws.session import AwsClients
from providers.base import ActionContext

ROOT_DEVICE = "/dev/xvda"
# Extra disks: /dev/sdf../dev/sdp is the range AWS recommends for EBS data volumes.
EXTRA_DEVICES = [f"/dev/sd{c}" for c in "fghijklmnop"]
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
BOOT_MARKERS = re.compile(r"login:|Reached target|Cloud-init v\. .* finished|systemd\[1\]: Startup finished")


def boot_mode(export_info: InstanceInfo) -> str:
    """RegisterImage ``BootMode`` for the source firmware."""
    return "uefi" if export_info.firmware_type == "EFI" else "legacy-bios"


def choose_instance_type(clients: AwsClients, env: Mapping[str, Any], export_info: InstanceInfo) -> str:
    """``flavor_name`` if given (checked), else the smallest type that fits CPU and memory."""
    secrets = clients.conn.secrets
    arch = str(env.get("architecture") or "x86_64")
    name = env.get("flavor_name") or env.get("instance_type")
    if name:
        info = flavors.describe_type(clients.ec2, str(name), secrets)
        why = flavors.suits(info, export_info, arch)
        if why:
            raise InvalidInput(f"instance type {name!r} can't host {export_info.name!r}: {why}")
        return str(name)
    catalogue = flavors.instance_types(clients.ec2, clients.region, clients.conn.endpoint_for("ec2"), secrets)
    return flavors.smallest_fit(catalogue, export_info, arch)


def _order_disks(
    export_info: InstanceInfo, disks: list[ImportedDisk]
) -> tuple[ImportedDisk, list[ImportedDisk]]:
    if not disks:
        raise InvalidInput(f"no imported disks to deploy {export_info.name!r} from")
    source_order = [d.id for d in export_info.devices.disks]
    ranked = sorted(
        disks, key=lambda d: source_order.index(d.disk_id) if d.disk_id in source_order else 1 << 30
    )
    return ranked[0], ranked[1:]


def _disk_info(export_info: InstanceInfo, disk_id: str) -> Any:
    return next((d for d in export_info.devices.disks if d.id == disk_id), None)


def _find(
    clients: AwsClients, kind: str, migration: str | None, role: str, extra: Mapping[str, str]
) -> list[dict[str, Any]]:
    if not migration:
        return []
    flt = t.filters({t.MIGRATION_TAG: migration, t.ROLE_TAG: role, **extra})
    ec2 = clients.ec2
    with aws_errors(f"looking for this migration's {kind}", clients.conn.secrets):
        if kind == "image":
            return list(ec2.describe_images(Owners=["self"], Filters=flt)["Images"])
        if kind == "volume":
            return list(ec2.describe_volumes(Filters=flt)["Volumes"])
        flt.append({"Name": "instance-state-name", "Values": LIVE_STATES})
        return [i for r in ec2.describe_instances(Filters=flt)["Reservations"] for i in r["Instances"]]


def _image_name(export_info: InstanceInfo, migration: str | None) -> str:
    raw = f"sterna-{export_info.name}-{migration or int(time.time())}"
    return re.sub(r"[^A-Za-z0-9()\[\]./\-'@_ ]", "-", raw)[:128]


def register_image(
    clients: AwsClients, env: Mapping[str, Any], export_info: InstanceInfo, boot: ImportedDisk, action: ActionContext
) -> tuple[str, dict[str, Any]]:
    """Register (or find) the AMI whose root is the boot disk's snapshot; returns (id, request)."""
    migration = action.action_id
    extra = {t.SOURCE_INSTANCE_TAG: export_info.name}
    root_type = volume_type_for(env, action.storage_mappings, _disk_info(export_info, boot.disk_id))
    request: dict[str, Any] = {
        "Name": _image_name(export_info, migration),
        "Description": f"Sterna migration of {export_info.name}"[:255],
        "Architecture": str(env.get("architecture") or "x86_64"),
        "RootDeviceName": ROOT_DEVICE,
        "VirtualizationType": "hvm",
        "EnaSupport": True,
        "BootMode": boot_mode(export_info),
        "BlockDeviceMappings": [
            {
                "DeviceName": ROOT_DEVICE,
                "Ebs": {
                    "SnapshotId": boot.details["snapshot_id"],
                    "VolumeSize": int(boot.details["volume_size_gib"]),
                    "VolumeType": root_type,
                    "DeleteOnTermination": True,
                    **volume_params(env, root_type),
                },
            }
        ],
    }
    found = _find(clients, "image", migration, t.ROLE_IMAGE, extra)
    if found:
        return str(found[0]["ImageId"]), request
    image_tags = {"Name": request["Name"], **t.action_tags(action), t.ROLE_TAG: t.ROLE_IMAGE, **extra}
    secrets = clients.conn.secrets
    with aws_errors(f"registering an image for {export_info.name!r}", secrets):
        try:
            image_id = clients.ec2.register_image(
                **request, TagSpecifications=t.tag_specs(["image"], image_tags)
            )["ImageId"]
        except ClientError as exc:
            # An attempt that crashed before tagging left an image under our (per-migration) name.
            if error_code(exc) != "InvalidAMIName.Duplicate":
                raise
            named = [{"Name": "name", "Values": [request["Name"]]}]
            image_id = clients.ec2.describe_images(Owners=["self"], Filters=named)["Images"][0]["ImageId"]
    # Tag again: some AWS-compatible clouds (and moto) drop TagSpecifications on RegisterImage,
    # and cleanup after a crash finds images only by these tags.
    with aws_errors(f"tagging image {image_id}", secrets):
        clients.ec2.create_tags(Resources=[image_id], Tags=t.tag_list(image_tags))
        clients.wait("image_available", delay=5, timeout=1800, ImageIds=[image_id])
    return str(image_id), request


def _nic_specs(plans: list[NicPlan]) -> list[dict[str, Any]]:
    specs = []
    for index, plan in enumerate(plans):
        spec: dict[str, Any] = {"DeviceIndex": index, "SubnetId": plan.subnet_id, "DeleteOnTermination": True}
        if plan.security_group_ids:
            spec["Groups"] = plan.security_group_ids
        specs.append(spec)
    return specs


def deploy_instance(
    clients: AwsClients, env: Mapping[str, Any], export_info: InstanceInfo, disks: list[ImportedDisk],
    action: ActionContext,
) -> DeployedInstance:
    """Register the AMI, launch the instance, attach extra disks as volumes from their snapshots."""
    secrets = clients.conn.secrets
    migration = action.action_id
    boot, extras = _order_disks(export_info, disks)
    if len(extras) > len(EXTRA_DEVICES):
        raise InvalidInput(f"{export_info.name!r} has more than {len(EXTRA_DEVICES) + 1} disks")
    plans = plan_nics(clients.ec2, env, action.network_map, export_info, secrets)
    instance_type = choose_instance_type(clients, env, export_info)
    image_id, image_request = register_image(clients, env, export_info, boot, action)

    extra = {t.SOURCE_INSTANCE_TAG: export_info.name}
    running = _find(clients, "instance", migration, t.ROLE_INSTANCE, extra)
    if running:
        instance_id = running[0]["InstanceId"]
    else:
        base = {"Name": export_info.name, **t.action_tags(action), **extra}
        params: dict[str, Any] = {
            "ImageId": image_id,
            "InstanceType": instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "NetworkInterfaces": _nic_specs(plans),
            "TagSpecifications": [
                *t.tag_specs(["instance"], {**base, t.ROLE_TAG: t.ROLE_INSTANCE}),
                *t.tag_specs(["volume"], {**base, t.ROLE_TAG: t.ROLE_VOLUME, t.DISK_TAG: boot.disk_id}),
            ],
        }
        if env.get("keypair_name"):
            params["KeyName"] = env["keypair_name"]
        if migration:
            # AWS' idempotency token covers the window in which a retry can't see the
            # instance yet (DescribeInstances is eventually consistent).
            token = hashlib.sha256(f"{migration}/{export_info.name}".encode()).hexdigest()
            params["ClientToken"] = token[:64]
        with aws_errors(f"launching instance {export_info.name!r}", secrets):
            instance_id = clients.ec2.run_instances(**params)["Instances"][0]["InstanceId"]
    with aws_errors(f"waiting for instance {instance_id} to run", secrets):
        clients.wait("instance_running", delay=5, timeout=600, InstanceIds=[instance_id])
        raw = clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    zone = raw["Placement"]["AvailabilityZone"]
    volumes = {
        d.disk_id: _attach_extra(
            clients, env=env, action=action, export_info=export_info, instance_id=instance_id, zone=zone, disk=d,
            device=dev,
        )
        for d, dev in zip(extras, EXTRA_DEVICES, strict=False)
    }
    return DeployedInstance(
        instance=export_info.name,
        id=instance_id,
        name=export_info.name,
        details={
            "image_id": image_id,
            "image_request": image_request,
            "instance_type": raw.get("InstanceType", instance_type),
            "subnet_ids": [p.subnet_id for p in plans],
            "security_group_ids": sorted({g for p in plans for g in p.security_group_ids}),
            "availability_zone": zone,
            "volumes": volumes,
            "snapshot_ids": [d.details["snapshot_id"] for d in disks],
            "region": clients.region,
        },
    )


def _attach_extra(
    clients: AwsClients,
    *,
    env: Mapping[str, Any],
    action: ActionContext,
    export_info: InstanceInfo,
    instance_id: str,
    zone: str,
    disk: ImportedDisk,
    device: str,
) -> str:
    """Create a volume from the disk's snapshot in the instance's zone and attach it."""
    secrets = clients.conn.secrets
    extra = {t.SOURCE_INSTANCE_TAG: export_info.name, t.DISK_TAG: disk.disk_id}
    found = _find(clients, "volume", action.action_id, t.ROLE_VOLUME, extra)
    ec2 = clients.ec2
    with aws_errors(f"creating the volume for disk {disk.disk_id}", secrets):
        volume_type = volume_type_for(env, action.storage_mappings, _disk_info(export_info, disk.disk_id))
        if found:
            volume = found[0]
        else:
            tags = {
                "Name": f"{export_info.name} {disk.disk_id}",
                **t.action_tags(action),
                t.ROLE_TAG: t.ROLE_VOLUME,
                **extra,
            }
            volume = ec2.create_volume(
                SnapshotId=disk.details["snapshot_id"],
                AvailabilityZone=zone,
                VolumeType=volume_type,
                **volume_params(env, volume_type),
                TagSpecifications=t.tag_specs(["volume"], tags),
            )
        volume_id = volume["VolumeId"]
        if any(a.get("InstanceId") == instance_id for a in volume.get("Attachments", [])):
            return str(volume_id)
        clients.wait("volume_available", delay=3, timeout=600, VolumeIds=[volume_id])
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=device)
        clients.wait("volume_in_use", delay=3, timeout=600, VolumeIds=[volume_id])
    return str(volume_id)


def verify_boot(
    clients: AwsClients, deployed: DeployedInstance, timeout: float, poll: float = 10.0
) -> list[str]:
    """Wait for both EC2 status checks to pass; add boot lines from the console when it has them.

    The instance status check (reachability) passes only once the guest kernel answers on
    its NIC, so it is evidence of a real boot. Console output is best effort: AWS fills it
    minutes after boot, and only for some instance types.
    """
    if not deployed.id:
        raise ProviderError(f"instance {deployed.instance!r} was never launched")
    ec2, secrets = clients.ec2, clients.conn.secrets
    last = "no status yet"

    def checks_passed() -> bool | None:
        nonlocal last
        with aws_errors(f"checking the status of {deployed.id}", secrets):
            statuses = ec2.describe_instance_status(InstanceIds=[deployed.id], IncludeAllInstances=True)[
                "InstanceStatuses"
            ]
        if not statuses:
            return None
        status = statuses[0]
        state = status["InstanceState"]["Name"]
        system = status.get("SystemStatus", {}).get("Status")
        instance = status.get("InstanceStatus", {}).get("Status")
        last = f"state {state}, system status {system}, instance status {instance}"
        if state in ("stopped", "stopping", "terminated", "shutting-down"):
            raise ProviderError(f"instance {deployed.id} is {state}: it did not stay up")
        if state == "running" and system == "ok" and instance == "ok":
            return True
        if instance == "impaired":
            raise ProviderError(f"instance {deployed.id} failed its status check: {last}")
        return None

    if poll_until(time.monotonic() + timeout, poll, checks_passed) is None:
        raise ProviderError(f"instance {deployed.id} did not pass its status checks in {timeout:.0f}s ({last})")
    lines = [f"instance {deployed.id} is running; system and instance status checks passed"]
    lines.extend(_console_lines(ec2, deployed.id, secrets))
    return lines


def _console_lines(ec2: Any, instance_id: str, secrets: Secrets) -> list[str]:
    try:
        with aws_errors(f"reading the console of {instance_id}", secrets):
            try:
                output = ec2.get_console_output(InstanceId=instance_id, Latest=True).get("Output") or ""
            except Exception as exc:  # Latest=True exists only on Nitro instances
                if "Latest" not in str(exc) and "Unsupported" not in str(exc):
                    raise
                output = ec2.get_console_output(InstanceId=instance_id).get("Output") or ""
    except ProviderError:
        return ["console output is not available"]
    if not output.strip():
        return ["console output is empty so far"]
    marked = [line.strip() for line in output.splitlines() if BOOT_MARKERS.search(line)]
    tail = marked[-3:] or [line.strip() for line in output.splitlines() if line.strip()][-2:]
    return [f"console: {line}"[:200] for line in tail]
