"""AWS → Azure, the mission's cloud-to-cloud example, through the REST API: moto is the source
(EBS direct reads of a snapshot), Azurite and the fake ARM the destination.

SQLite only: the same pipeline runs on PostgreSQL in ``test_azure_migration.py`` and
``test_aws_migration.py``; this one checks that the two clouds compose.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningStack, wait_final
from tests.leftovers import deployments_of
from tests.peers.azure.fixtures import AzureCloud, tagged
from tests.peers.moto import conn_info, ec2, guest_volumes, moto_url

pytestmark = pytest.mark.slow
__all__ = ["conn_info", "ec2", "guest_volumes", "moto_url"]
MIB = 1024 * 1024


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_aws_to_azure_disk_identical(stack: RunningStack, conn_info: dict[str, Any], ec2: Any,
                                     guest_volumes: Any, azure_cloud: AzureCloud, tmp_path: Path) -> None:
    from devstack.sample import build_disk

    image = tmp_path / "guest.raw"
    build_disk(image, size=64 * MIB, data_mib=2, seed=31)
    ami = ec2.register_image(Name="base", RootDeviceName="/dev/sda1", VirtualizationType="hvm")["ImageId"]
    inst = ec2.run_instances(ImageId=ami, InstanceType="t3.small", MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-aws"}]}])["Instances"][0]
    guest_volumes.write(inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"], image.read_bytes())
    with stack.client() as api:
        a = api.create_endpoint("aws-to-az", "aws", conn_info)
        b = api.create_endpoint("az-from-aws", "azure", azure_cloud.conn)
        m = api.create_migration(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"],
                                 instances=["web-aws"], shutdown_instances=True,
                                 destination_environment={"vm_size": "Standard_B2s"},
                                 network_map={"default": azure_cloud.subnet_id})
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    # Tagged by the action that made it: the migration, or on transfers its deployment.
    [vm] = tagged(azure_cloud, "Microsoft.Compute/virtualMachines", [m["id"], *deployments_of(stack, final)])
    assert vm["properties"]["hardwareProfile"]["vmSize"] == "Standard_B2s"
    disk = azure_cloud.arm.get(vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"])
    assert disk is not None and azure_cloud.arm.sas_granted() == []
    # The EBS volume is 8 GiB; the guest wrote its first 64 MiB: compare with that, zero-extended.
    expected = tmp_path / "expected.raw"
    subprocess.run(["cp", "--sparse=always", str(image), str(expected)], check=True)
    subprocess.run(["truncate", "-s", "8G", str(expected)], check=True)
    back = tmp_path / "back.vhd"
    blob = azure_cloud.arm.blob(disk)  # the test's own look at Azurite (account key), not a SAS
    size = blob.get_blob_properties().size
    assert size == 8 * 1024**3 + 512
    with open(back, "wb") as out:
        out.truncate(size)
        for r in blob.get_page_ranges()[0]:
            out.seek(r["start"])
            out.write(blob.download_blob(offset=r["start"], length=r["end"] + 1 - r["start"]).readall())
    cmp = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vpc", str(expected), str(back)],
                         capture_output=True, text=True, check=False)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
