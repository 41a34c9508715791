"""Source side: inventory, instance snapshots read through the EBS direct APIs, templates.

moto's volumes hold no bytes and its CreateSnapshot doesn't reach its EBS-direct store, so
the ``guest_volumes`` fixture (see conftest) gives the instance's root volume real guest
bytes, an ext4 file system made by mkfs.ext4, and has CreateSnapshot capture them, as AWS
does. Everything the provider does goes over HTTP to moto: CreateSnapshot on EC2, then
ListSnapshotBlocks and GetSnapshotBlock on EBS.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from core.errors import NotFound
from providers.aws.provider import AwsProvider
from providers.base import ActionContext

GiB = 1024**3
BLOCK = 512 * 1024
MKFS = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
DEBUGFS = shutil.which("debugfs") or shutil.which("debugfs", path="/usr/sbin:/sbin")


def ext4_image(tmp_path: Path) -> bytes:
    root = tmp_path / "guest-root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("src-vm\n")
    (root / "etc" / "os-release").write_text('ID=debian\nVERSION_ID="12"\n')
    (root / "var").mkdir()
    (root / "var" / "data.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB of non-zero bytes
    image = tmp_path / "guest.img"
    subprocess.run([str(MKFS), "-q", "-F", "-L", "sterna-src", "-d", str(root), str(image), "8M"], check=True)
    return image.read_bytes()


@pytest.fixture
def base_image(ec2: Any) -> str:
    return str(
        ec2.register_image(Name="base-image", RootDeviceName="/dev/sda1", VirtualizationType="hvm")["ImageId"]
    )


def launch(ec2: Any, image_id: str, name: str) -> dict[str, Any]:
    return dict(
        ec2.run_instances(
            ImageId=image_id,
            InstanceType="t3.small",
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}],
        )["Instances"][0]
    )


def test_source_snapshot_reads_back_guest_bytes(
    provider: AwsProvider, ec2: Any, guest_volumes: Any, base_image: str, tmp_path: Path
) -> None:
    image = ext4_image(tmp_path)
    instance = launch(ec2, base_image, "src-vm")
    volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    guest_volumes.write(volume_id, image)

    info = provider.validate_source({}, "src-vm")  # by Name tag
    assert info.id == instance["InstanceId"]
    assert info.flavor_name == "t3.small"
    assert (info.num_cpu, info.memory_mb) == (2, 2048)
    assert [d.id for d in info.devices.disks] == [volume_id]
    assert info.devices.disks[0].size_bytes == 8 * GiB
    assert info.devices.nics[0].network_name == instance["SubnetId"]

    env, action = {"shutdown_instance": True}, ActionContext(action_id="mig-src")
    workdir = tmp_path / "work"
    snap = provider.snapshot_instance(env, "src-vm", workdir, action)
    state = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] == "stopped"
    # Activities run at least once: a repeat returns the same snapshot, not a new one.
    assert provider.snapshot_instance(env, "src-vm", workdir, action) == snap
    snapshot_id = snap.disks[0].details["snapshot_id"]
    tags = {
        t["Key"]: t["Value"]
        for t in ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["Tags"]
    }
    assert tags["sterna:migration-id"] == "mig-src"

    source = provider.open_disk(snap, snap.disks[0])
    assert source.size == 8 * GiB
    extents = source.extents()
    # Only the blocks the guest wrote are listed, all within the file system's 8 MiB.
    assert extents and extents[-1].end <= len(image)
    readback = bytearray(len(image))
    for ext in extents:
        readback[ext.offset : ext.end] = source.read(ext.offset, ext.length)
    assert bytes(readback) == image
    assert source.read(len(image), BLOCK) == bytes(BLOCK)  # past the guest's data: zeros

    copy = tmp_path / "readback.img"
    copy.write_bytes(readback)
    out = subprocess.run(
        [str(DEBUGFS), "-R", "cat /etc/hostname", str(copy)], check=True, capture_output=True, text=True
    )
    assert out.stdout == "src-vm\n"

    provider.delete_snapshot(snap)
    provider.delete_snapshot(snap)  # tolerated
    mine = [{"Name": "tag:sterna:migration-id", "Values": ["mig-src"]}]
    assert ec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"] == []


def test_template_disks_are_read_in_place_and_never_deleted(
    provider: AwsProvider, ec2: Any, guest_volumes: Any, base_image: str, tmp_path: Path
) -> None:
    # moto gives every AMI a 15 GiB stand-in snapshot; here it gets guest bytes to read.
    image = ec2.describe_images(ImageIds=[base_image])["Images"][0]
    snapshot_id = image["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    data = b"template!" * 100_000
    guest_volumes.fill_snapshot(snapshot_id, data)

    snap = provider.snapshot_instance({}, base_image, tmp_path / "work", ActionContext(action_id="mig-tpl"))
    assert [d.details["snapshot_id"] for d in snap.disks] == [snapshot_id]
    assert snap.disks[0].size_bytes == 15 * GiB
    source = provider.open_disk(snap, snap.disks[0])
    assert source.read(0, len(data)) == data

    provider.delete_snapshot(snap)
    assert ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]  # the AMI's own: kept


def test_templates_are_amis(provider: AwsProvider, ec2: Any, base_image: str) -> None:
    launch(ec2, base_image, "vm-a")
    listing = {i.name: i for i in provider.list_instances({})}
    assert listing["base-image"].id == base_image
    assert listing["base-image"].power_state == "template"
    assert listing["vm-a"].power_state in ("pending", "running")
    assert provider.get_instance({}, "base-image").id == base_image
    assert [i.name for i in provider.list_instances({}, name_filter="vm-")] == ["vm-a"]
    with pytest.raises(NotFound, match="'nope'"):
        provider.get_instance({}, "nope")


def test_options_networks_and_storage(provider: AwsProvider, subnet: dict[str, Any]) -> None:
    assert AwsProvider.provider_types() == [4, 8, 16, 32, 128, 512, 32768, 131072]
    opts = {o.name: o for o in provider.destination_options({})}
    assert "us-east-1" in opts["region"].values
    assert opts["region"].config_default == "us-east-1"
    assert subnet["SubnetId"] in [v["id"] for v in opts["subnet_id"].values]
    assert subnet["GroupId"] in [v["id"] for v in opts["security_group_ids"].values]
    assert "m5.large" in opts["flavor_name"].values
    assert "gp3" in opts["volume_type"].values
    assert {"region", "subnet_id", "instance_type", "shutdown_instance"} <= {
        o.name for o in provider.source_options({})
    }
    assert subnet["SubnetId"] in [n.id for n in provider.list_networks({})]
    storage = provider.list_storage({})
    assert storage.config_default == "gp3"
    assert {"gp3", "io2", "st1"} <= {b.id for b in storage.storage_backends}
