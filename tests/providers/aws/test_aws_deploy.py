"""Destination control path: AMI registration, instance launch, extra volumes, boot check, cleanup.

moto ignores RegisterImage's block-device mappings (it invents a 15 GiB /dev/sda1 from a
snapshot of its own) and keeps only Name and BootMode, so the mapping is checked in the
request moto *received*, through its recorder. Real AWS would build the AMI's root from
our snapshot and refuse a BootMode the snapshot can't boot. moto's volumes hold no data,
so that a volume created from a snapshot carries the snapshot's bytes is AWS' promise,
not something shown here; we check that the volume names the right snapshot.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.errors import ProviderError
from core.models import DiskLocator, ImportedDisk, InstanceInfo
from providers.aws import flavors
from providers.aws.provider import AwsProvider
from providers.base import ActionContext
from tests.providers.aws.awshelpers import Ctx, export_info, make_disk, pattern

MiB = 1024 * 1024


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def live_instances(ec2: Any, migration: str) -> list[dict[str, Any]]:
    found = ec2.describe_instances(
        Filters=[
            {"Name": "tag:sterna:migration-id", "Values": [migration]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    return [i for r in found for i in r["Instances"]]


async def import_two_disks(
    provider: AwsProvider, env: dict[str, Any], action: ActionContext, tmp_path: Path, firmware: str = "BIOS"
) -> tuple[InstanceInfo, list[ImportedDisk]]:
    disks = []
    for n in range(2):
        path = make_disk(tmp_path / f"d{n}.raw", 2 * MiB, {0: pattern(n, 700_000)})
        disks.append(DiskLocator(disk_id=f"disk-{n}", size_bytes=2 * MiB, path=str(path)))
    info = export_info(disks, firmware=firmware)
    imported = [await provider.import_disk(env, info, d, Ctx(tmp_path).ctx, action) for d in disks]
    return info, imported


@pytest.fixture
def env() -> dict[str, Any]:
    return {"flavor_name": "m5.large"}


@pytest.fixture
def action(subnet: dict[str, Any]) -> ActionContext:
    return ActionContext(
        action_id="mig-deploy", source_name="web01",
        network_map={"lan": {"subnet_id": subnet["SubnetId"], "security_group_ids": [subnet["GroupId"]]}},
        storage_mappings={
            "default": "gp3",
            "disk_mappings": [{"disk_id": "disk-1", "destination": "io2"}],
        },
    )


async def test_instance_runs_with_mapped_type_subnet_and_tags(
    provider: AwsProvider, ec2: Any, env: dict[str, Any], action: ActionContext, recorder: Any, tmp_path: Path
) -> None:
    subnet = {
        "SubnetId": action.network_map["lan"]["subnet_id"],
        "GroupId": action.network_map["lan"]["security_group_ids"][0],
    }
    info, imported = await import_two_disks(provider, env, action, tmp_path, firmware="EFI")
    provider.validate_destination(env, info, action)

    recorder.start()
    deployed = provider.deploy_instance(env, info, imported, action)
    recorder.stop()

    inst = ec2.describe_instances(InstanceIds=[deployed.id])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "running"
    assert inst["InstanceType"] == "m5.large"
    assert inst["SubnetId"] == subnet["SubnetId"]
    assert [g["GroupId"] for g in inst["NetworkInterfaces"][0]["Groups"]] == [subnet["GroupId"]]
    assert tags_of(inst)["sterna:migration-id"] == "mig-deploy"
    assert tags_of(inst)["Name"] == "web01"
    assert inst["ImageId"] == deployed.details["image_id"]

    # The AMI request as moto received it: root from the boot disk's snapshot, ENA, UEFI.
    (register,) = recorder.ec2_calls("RegisterImage")
    assert register["RootDeviceName"] == "/dev/xvda"
    assert register["BlockDeviceMapping.1.DeviceName"] == "/dev/xvda"
    assert register["BlockDeviceMapping.1.Ebs.SnapshotId"] == imported[0].details["snapshot_id"]
    assert register["BlockDeviceMapping.1.Ebs.VolumeType"] == "gp3"
    assert register["BlockDeviceMapping.1.Ebs.DeleteOnTermination"] == "true"
    assert register["EnaSupport"] == "true"
    assert register["BootMode"] == "uefi"
    assert register["VirtualizationType"] == "hvm"
    assert register["Architecture"] == "x86_64"
    image = ec2.describe_images(ImageIds=[deployed.details["image_id"]])["Images"][0]
    assert image["BootMode"] == "uefi"  # the one attribute moto keeps
    assert tags_of(image)["sterna:migration-id"] == "mig-deploy"
    (run,) = recorder.ec2_calls("RunInstances")
    assert run["InstanceType"] == "m5.large"
    assert run["NetworkInterface.1.SubnetId"] == subnet["SubnetId"]

    # The extra disk: a volume from its own snapshot, with the mapped type, attached as sdf.
    volume = ec2.describe_volumes(VolumeIds=[deployed.details["volumes"]["disk-1"]])["Volumes"][0]
    assert volume["SnapshotId"] == imported[1].details["snapshot_id"]
    assert volume["VolumeType"] == "io2"
    assert volume["Attachments"][0]["InstanceId"] == deployed.id
    assert volume["Attachments"][0]["Device"] == "/dev/sdf"
    assert tags_of(volume)["sterna:migration-id"] == "mig-deploy"

    # moto passes both status checks at once and serves a canned console log; real AWS
    # takes minutes and may have no console output yet.
    lines = provider.verify_boot(env, deployed, timeout=30)
    assert "status checks passed" in lines[0]
    assert any(line.startswith("console: ") for line in lines[1:])

    # A retried deploy finds the same instance instead of launching another.
    assert provider.deploy_instance(env, info, imported, action).id == deployed.id
    assert len(live_instances(ec2, "mig-deploy")) == 1

    # Success: the AMI and the uploaded snapshots go, the instance and its volumes stay.
    lines = provider.cleanup(env, "web01", imported, deployed, succeeded=True, action=action)
    assert f"deregistered image {deployed.details['image_id']}" in lines
    mine = [{"Name": "tag:sterna:migration-id", "Values": ["mig-deploy"]}]
    assert ec2.describe_images(Owners=["self"], Filters=mine)["Images"] == []
    assert ec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"] == []
    assert [i["InstanceId"] for i in live_instances(ec2, "mig-deploy")] == [deployed.id]


async def test_failed_migration_cleanup_finds_everything_by_tags(
    conn_info: dict[str, Any], provider: AwsProvider, ec2: Any, env: dict[str, Any], action: ActionContext,
    tmp_path: Path,
) -> None:
    def all_snapshots() -> set[str]:
        return {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}

    before = all_snapshots()
    info, imported = await import_two_disks(provider, env, action, tmp_path)
    deployed = provider.deploy_instance(env, info, imported, action)
    volume_id = deployed.details["volumes"]["disk-1"]

    # A sibling instance of the same migration that fails takes nothing of web01's with it.
    sibling = replace(action, source_name="web02")
    assert AwsProvider(conn_info).cleanup(env, "web02", [], None, succeeded=False, action=sibling) == []
    assert [i["InstanceId"] for i in live_instances(ec2, "mig-deploy")] == [deployed.id]

    # After a crash the cleanup activity knows only the migration id and the source instance's name.
    lines = AwsProvider(conn_info).cleanup(env, "web01", [], None, succeeded=False, action=action)

    assert f"terminated instance {deployed.id}" in lines
    assert f"deleted volume {volume_id}" in lines
    assert live_instances(ec2, "mig-deploy") == []
    mine = [{"Name": "tag:sterna:migration-id", "Values": ["mig-deploy"]}]
    assert ec2.describe_volumes(Filters=mine)["Volumes"] == []
    assert ec2.describe_images(Owners=["self"], Filters=mine)["Images"] == []
    assert ec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"] == []
    # Untagged ones too: moto's stand-in snapshot for the AMI root goes with the AMI
    # (on AWS that snapshot is our tagged upload).
    assert all_snapshots() == before


async def test_smallest_fitting_type_when_no_flavor(
    conn_info: dict[str, Any], provider: AwsProvider, ec2: Any, env: dict[str, Any], action: ActionContext,
    tmp_path: Path,
) -> None:
    env, action = {**env, "flavor_name": None}, replace(action, action_id="mig-fit")
    info, imported = await import_two_disks(provider, env, action, tmp_path)
    info = info.model_copy(update={"num_cpu": 4, "memory_mb": 10_000})
    deployed = provider.deploy_instance(env, info, imported, action)
    chosen = ec2.describe_instance_types(InstanceTypes=[deployed.details["instance_type"]])["InstanceTypes"][
        0
    ]
    assert chosen["VCpuInfo"]["DefaultVCpus"] >= 4
    assert chosen["MemoryInfo"]["SizeInMiB"] >= 10_000
    # No fitting current-generation x86 type in moto's catalogue has less memory. (The
    # catalogue as moto served it to the provider, cached: paging it again takes seconds.)
    catalogue = flavors.instance_types(ec2, "us-east-1", conn_info["endpoint_url"])
    fits = [
        t
        for t in catalogue
        if t["VCpuInfo"]["DefaultVCpus"] >= 4
        and t["MemoryInfo"]["SizeInMiB"] >= 10_000
        and t.get("CurrentGeneration")
        and not t.get("BareMetal")
        and "x86_64" in t["ProcessorInfo"]["SupportedArchitectures"]
    ]
    assert chosen["MemoryInfo"]["SizeInMiB"] == min(t["MemoryInfo"]["SizeInMiB"] for t in fits)


def test_smallest_fit_prefers_less_memory_then_fewer_cpus() -> None:
    catalogue: list[dict[str, Any]] = [
        {"InstanceType": "big.2x", "VCpuInfo": {"DefaultVCpus": 8}, "MemoryInfo": {"SizeInMiB": 32768}},
        {"InstanceType": "c.large", "VCpuInfo": {"DefaultVCpus": 4}, "MemoryInfo": {"SizeInMiB": 8192},
         "SupportedBootModes": ["legacy-bios", "uefi"]},
        {"InstanceType": "m.large", "VCpuInfo": {"DefaultVCpus": 2}, "MemoryInfo": {"SizeInMiB": 8192},
         "SupportedBootModes": ["legacy-bios", "uefi"]},
        {"InstanceType": "old.large", "VCpuInfo": {"DefaultVCpus": 2}, "MemoryInfo": {"SizeInMiB": 4096},
         "CurrentGeneration": False},
        {"InstanceType": "arm.large", "VCpuInfo": {"DefaultVCpus": 2}, "MemoryInfo": {"SizeInMiB": 4096},
         "ProcessorInfo": {"SupportedArchitectures": ["arm64"]}},
        {"InstanceType": "bios.large", "VCpuInfo": {"DefaultVCpus": 2}, "MemoryInfo": {"SizeInMiB": 6144},
         "SupportedBootModes": ["legacy-bios"]},
    ]  # fmt: skip
    # A type that doesn't list its boot modes is taken as BIOS-only (the conservative reading).
    vm = InstanceInfo(id="v", name="v", num_cpu=2, memory_mb=4000)
    assert flavors.smallest_fit(catalogue, vm) == "bios.large"
    assert flavors.smallest_fit(catalogue, vm.model_copy(update={"firmware_type": "EFI"})) == "m.large"
    assert flavors.smallest_fit(catalogue, vm.model_copy(update={"num_cpu": 3})) == "c.large"


async def test_verify_boot_fails_for_a_stopped_instance(
    provider: AwsProvider, ec2: Any, env: dict[str, Any], action: ActionContext, tmp_path: Path
) -> None:
    info, imported = await import_two_disks(provider, env, action, tmp_path)
    deployed = provider.deploy_instance(env, info, imported, action)
    ec2.stop_instances(InstanceIds=[deployed.id])
    with pytest.raises(ProviderError, match="stopped"):
        provider.verify_boot(env, deployed, timeout=5)
