"""EC2 instances and AMIs described as Coriolis ``export_info``.

Instances are found by id (``i-..``) or ``Name`` tag; templates are AMIs owned by the
account, found by id (``ami-..``) or name. A disk's id is its volume id (for an AMI, its
snapshot id); a NIC's network name is its subnet id, the key ``network_map`` uses.
"""

from __future__ import annotations

from typing import Any

from core.errors import InvalidInput, NotFound
from core.models import Devices, DiskInfo, InstanceInfo, NicInfo
from providers.aws.ebs import GIB
from providers.aws.errors import Secrets, aws_errors
from providers.aws.tags import as_dict

# AMIs carry no CPU or memory; a template is described with this minimal shape.
TEMPLATE_NUM_CPU = 1
TEMPLATE_MEMORY_MB = 1024


def _firmware(boot_mode: str | None) -> str:
    return "EFI" if boot_mode in ("uefi", "uefi-preferred") else "BIOS"


def _device_unit(device: str) -> int:
    # /dev/xvda, /dev/sdf, /dev/nvme0n1 -> a stable small number for ordering
    tail = device.rstrip("0123456789p")[-1:]
    return ord(tail) - ord("a") if tail.isalpha() else 0


def describe_instance_raw(ec2: Any, ref: str, secrets: Secrets = ()) -> dict[str, Any]:
    """The ``describe_instances`` record for an id or ``Name`` tag; ``NotFound`` otherwise."""
    try:
        with aws_errors(f"looking up instance {ref!r}", secrets):
            if ref.startswith("i-"):
                pages = ec2.describe_instances(InstanceIds=[ref])["Reservations"]
            else:
                pages = ec2.describe_instances(
                    Filters=[
                        {"Name": "tag:Name", "Values": [ref]},
                        {
                            "Name": "instance-state-name",
                            "Values": ["pending", "running", "stopping", "stopped"],
                        },
                    ]
                )["Reservations"]
    except (NotFound, InvalidInput):
        pages = []
    found = [
        i for r in pages for i in r["Instances"] if i["State"]["Name"] not in ("terminated", "shutting-down")
    ]
    if not found:
        raise NotFound(f"instance {ref!r} was not found")
    if len(found) > 1:
        raise InvalidInput(f"instance name {ref!r} is ambiguous: {', '.join(i['InstanceId'] for i in found)}")
    return dict(found[0])


def describe_image_raw(ec2: Any, ref: str, secrets: Secrets = ()) -> dict[str, Any]:
    """An AMI by id or name (owned by the account); ``NotFound`` otherwise."""
    try:
        with aws_errors(f"looking up image {ref!r}", secrets):
            if ref.startswith("ami-"):
                found = ec2.describe_images(ImageIds=[ref])["Images"]
            else:
                found = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [ref]}])[
                    "Images"
                ]
    except (NotFound, InvalidInput):
        found = []
    if not found:
        raise NotFound(f"image {ref!r} was not found")
    return dict(found[0])


def _volumes(ec2: Any, ids: list[str], secrets: Secrets) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    with aws_errors("describing volumes", secrets):
        return {v["VolumeId"]: v for v in ec2.describe_volumes(VolumeIds=ids)["Volumes"]}


def instance_info(
    ec2: Any, raw: dict[str, Any], type_info: dict[str, Any] | None, secrets: Secrets = ()
) -> InstanceInfo:
    """``export_info`` of one instance."""
    tags = as_dict(raw.get("Tags"))
    mappings = [m for m in raw.get("BlockDeviceMappings", []) if "Ebs" in m]
    volumes = _volumes(ec2, [m["Ebs"]["VolumeId"] for m in mappings], secrets)
    root = raw.get("RootDeviceName")
    # The root disk comes first: deploy_instance boots from the first disk.
    mappings.sort(key=lambda m: (m["DeviceName"] != root, m["DeviceName"]))
    disks = []
    for m in mappings:
        vol = volumes.get(m["Ebs"]["VolumeId"], {})
        disks.append(
            DiskInfo(
                id=m["Ebs"]["VolumeId"],
                size_bytes=int(vol.get("Size", 0)) * GIB,
                format="raw",
                allocation_type="dynamic",
                unit_number=_device_unit(m["DeviceName"]),
                controller_id=m["DeviceName"],
                storage_backend_identifier=vol.get("VolumeType"),
            )
        )
    nics = [
        NicInfo(
            network_name=n.get("SubnetId", ""),
            mac_address=n.get("MacAddress", ""),
            id=n.get("NetworkInterfaceId"),
            name=n.get("Description") or None,
            ip_addresses=[
                a["PrivateIpAddress"] for a in n.get("PrivateIpAddresses", []) if "PrivateIpAddress" in a
            ],
        )
        for n in sorted(
            raw.get("NetworkInterfaces", []), key=lambda n: n.get("Attachment", {}).get("DeviceIndex", 0)
        )
    ]
    vcpu = type_info.get("VCpuInfo", {}).get("DefaultVCpus") if type_info else None
    cpu_opts = raw.get("CpuOptions") or {}
    if cpu_opts.get("CoreCount"):
        vcpu = int(cpu_opts["CoreCount"]) * int(cpu_opts.get("ThreadsPerCore", 1))
    platform = (raw.get("PlatformDetails") or raw.get("Platform") or "").lower()
    return InstanceInfo(
        id=raw["InstanceId"],
        name=tags.get("Name") or raw["InstanceId"],
        instance_name=raw["InstanceId"],
        num_cpu=int(vcpu or 1),
        memory_mb=int(type_info.get("MemoryInfo", {}).get("SizeInMiB", 0) if type_info else 0) or 1024,
        os_type="windows" if "windows" in platform else "linux",
        firmware_type=_firmware(raw.get("CurrentInstanceBootMode") or raw.get("BootMode")),
        flavor_name=raw.get("InstanceType"),
        hostname=raw.get("PrivateDnsName") or None,
        power_state=raw["State"]["Name"],
        devices=Devices(disks=disks, nics=nics),
    )


def image_info(raw: dict[str, Any]) -> InstanceInfo:
    """``export_info`` of an AMI (a template): its EBS snapshots are its disks."""
    root = raw.get("RootDeviceName")
    mappings = [m for m in raw.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]
    mappings.sort(key=lambda m: (m["DeviceName"] != root, m["DeviceName"]))
    disks = [
        DiskInfo(
            id=m["Ebs"]["SnapshotId"],
            size_bytes=int(m["Ebs"].get("VolumeSize", 0)) * GIB,
            allocation_type="dynamic",
            unit_number=_device_unit(m["DeviceName"]),
            controller_id=m["DeviceName"],
            storage_backend_identifier=m["Ebs"].get("VolumeType"),
        )
        for m in mappings
    ]
    platform = (raw.get("PlatformDetails") or raw.get("Platform") or "").lower()
    return InstanceInfo(
        id=raw["ImageId"],
        name=raw.get("Name") or raw["ImageId"],
        instance_name=raw["ImageId"],
        num_cpu=TEMPLATE_NUM_CPU,
        memory_mb=TEMPLATE_MEMORY_MB,
        os_type="windows" if "windows" in platform else "linux",
        firmware_type=_firmware(raw.get("BootMode")),
        power_state="template",
        devices=Devices(disks=disks),
    )


def list_raw(ec2: Any, secrets: Secrets = ()) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(instances that are not terminated, AMIs owned by the account)."""
    instances: list[dict[str, Any]] = []
    with aws_errors("listing instances", secrets):
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
        ):
            for reservation in page["Reservations"]:
                instances.extend(reservation["Instances"])
    with aws_errors("listing images", secrets):
        images = list(ec2.describe_images(Owners=["self"])["Images"])
    return instances, images
