"""AWS as destination and source through the REST API, against a moto server.

moto stands in for AWS here; where it is less strict (checksums, RegisterImage's mappings,
volume contents) the provider tests in ``tests/providers/aws`` say what real AWS does.
Snapshot inheritance is AWS's (``ebs_inheritance``): on transfers a deployment's disk is a child
of the replica snapshot, and it must read back whole after the replica is deleted.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningStack, task, wait_final, wait_for
from tests.helpers import identical, inventories
from tests.leftovers import deployments_of
from tests.peers.moto import REGION, conn_info, ebs, ebs_inheritance, ec2, guest_volumes, moto_url, subnet
from tests.providers.aws.awshelpers import read_snapshot

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ebs_inheritance")]
__all__ = ["conn_info", "ebs", "ebs_inheritance", "ec2", "guest_volumes", "moto_url", "subnet"]
TAG = "sterna:migration-id"


def _mine(ec2: Any, migration_id: str, stack: RunningStack | None = None) -> dict[str, list[Any]]:
    """Everything in the account tagged with this migration, or (on transfers) with the deployment it made:
    each action tags what it creates with its own id (``stack`` to find the deployment)."""
    ids = [migration_id]
    if stack is not None:
        with stack.client() as api:
            ids += deployments_of(stack, api.get_migration(migration_id))
    f = [{"Name": f"tag:{TAG}", "Values": ids}]
    return {
        "instances": [i for r in ec2.describe_instances(Filters=f)["Reservations"] for i in r["Instances"]
                      if i["State"]["Name"] != "terminated"],
        "images": ec2.describe_images(Owners=["self"], Filters=f)["Images"],
        "snapshots": ec2.describe_snapshots(OwnerIds=["self"], Filters=f)["Snapshots"],
    }


def _endpoints(api: Any, stack: RunningStack, conn: dict[str, Any]) -> tuple[str, str, Path]:
    src, _ = inventories(stack, ["vm-a"], data_mib=8)
    a = api.create_endpoint("inv", "local", {"path": str(src)})
    b = api.create_endpoint("aws", "aws", conn)
    return a["id"], b["id"], src


def test_local_to_aws(stack: RunningStack, conn_info: dict[str, Any], ec2: Any, ebs: Any,
                      subnet: dict[str, Any]) -> None:
    with stack.client() as api:
        origin, dest, src = _endpoints(api, stack, conn_info)
        m = api.create_migration(
            origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
            destination_environment={"flavor_name": "t3.small", "keep_image": True,
                                     "security_group_ids": [subnet["GroupId"]]},
            network_map={"VM Network": subnet["SubnetId"]},
        )
        final = wait_final(api, m["id"])
        assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
        assert conn_info["secret_access_key"] not in api.http.get(f"/migrations/{m['id']}").text
    mine = _mine(ec2, m["id"], stack)
    [instance] = mine["instances"]
    assert instance["InstanceType"] == "t3.small"
    assert instance["SubnetId"] == subnet["SubnetId"]
    # Tagged with the action that made it: the migration, or on transfers its deployment (of the same
    # transfer id); _mine found it by one of those.
    [tag] = [t["Value"] for t in instance["Tags"] if t["Key"] == TAG]
    assert tag == m["id"] or tag in deployments_of(stack, final), tag
    # moto drops RegisterImage's EnaSupport and mappings; tests/providers/aws asserts the request itself.
    assert len(mine["images"]) == 1
    # The imported EBS snapshot holds exactly the converted disk (raw, as AWS takes it).
    imported = [s for s in mine["snapshots"]
                if {"Key": "sterna:role", "Value": "import-snapshot"} in s.get("Tags", [])]
    [snap] = imported
    raw = (src / "vm-a" / "disk-0.raw").read_bytes()
    assert read_snapshot(ebs, snap["SnapshotId"], len(raw)) == raw


def test_aws_to_local_byte_for_byte(stack: RunningStack, conn_info: dict[str, Any], ec2: Any,
                                   guest_volumes: Any, tmp_path: Path) -> None:
    from devstack.sample import build_disk

    image = tmp_path / "guest.raw"
    build_disk(image, size=64 * 1024**2, data_mib=2, seed=21)
    ami = ec2.register_image(Name="base", RootDeviceName="/dev/sda1", VirtualizationType="hvm")["ImageId"]
    inst = ec2.run_instances(ImageId=ami, InstanceType="t3.small", MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-aws"}]}])["Instances"][0]
    guest_volumes.write(inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"], image.read_bytes())
    _, dst = inventories(stack, [], 1)
    with stack.client() as api:
        a = api.create_endpoint("aws-src", "aws", conn_info)
        b = api.create_endpoint("kvm", "local", {"path": str(dst)})
        m = api.create_migration(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"],
                                 instances=["web-aws"], shutdown_instances=True)
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    [disk] = (dst / "web-aws").glob("*.qcow2")
    # The EBS volume is 8 GiB; the guest wrote its first 64 MiB: compare against that, zero-extended.
    expected = tmp_path / "expected.raw"
    subprocess.run(["cp", "--sparse=always", str(image), str(expected)], check=True)
    subprocess.run(["truncate", "-s", "8G", str(expected)], check=True)
    assert identical(expected, disk)
    assert _mine(ec2, m["id"])["snapshots"] == [], "source snapshots are removed after the copy"


def test_cancel_mid_upload_leaves_nothing(stack: RunningStack, conn_info: dict[str, Any], ec2: Any,
                                         subnet: dict[str, Any]) -> None:
    with stack.client() as api:
        origin, dest, _src = _endpoints(api, stack, conn_info)
        m = api.create_migration(
            origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
            destination_environment={"bandwidth_limit": 1024 * 1024},
            network_map={"VM Network": subnet["SubnetId"]},
        )

        def uploading() -> bool:
            # On transfers the bytes go to AWS in REPLICATE_DISKS (PutSnapshotBlock into the replica snapshot);
            # the deployment's import then writes none of its own, and passes in a moment.
            replicating = task(api.get_migration(m["id"]), "vm-a", "REPLICATE_DISKS")
            position = (replicating["progress_updates"] or [{}])[-1].get("current_step")
            return (replicating["status"] == "RUNNING" and bool(position)
                    and bool(_mine(ec2, m["id"], stack)["snapshots"]))

        wait_for(uploading, 120, 0.2, "upload under way")
        api.cancel_migration(m["id"])
        final = wait_final(api, m["id"], timeout=120)
    assert final["last_execution_status"] == "CANCELED"
    assert task(final, "vm-a", "CLEANUP_MIGRATION_RESOURCES")["status"] == "COMPLETED"
    assert _mine(ec2, m["id"], stack) == {"instances": [], "images": [], "snapshots": []}


def test_worker_killed_mid_replication_resumes_into_its_snapshot(stack: RunningStack, conn_info: dict[str, Any],
                                                                 ec2: Any, ebs: Any, subnet: dict[str, Any]) -> None:
    """A migration to AWS moves the disk's data in REPLICATE_DISKS: EBS direct PutSnapshotBlock calls into
    the replica snapshot (on transfers; the deployment then writes only its delta). A worker killed
    halfway: the retry resumes into the same snapshot from its checkpoint, never re-sending what AWS
    already holds, and the instance's disk equals the source."""
    from tests.api.test_transfers import data_extents, data_midpoint

    src, _ = inventories(stack, ["vm-a"], data_mib=16)
    disk = src / "vm-a" / "disk-0.raw"
    allocated = sum(e["length"] for e in data_extents(disk))
    halfway = data_midpoint(disk)  # progress is a position on the disk: half the data lies before it
    with stack.client() as api:
        origin = api.create_endpoint("inv-kill", "local", {"path": str(src)})["id"]
        dest = api.create_endpoint("aws-kill", "aws", conn_info)["id"]
        m = api.create_migration(
            origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
            source_environment={"bandwidth_limit": 2 * 1024 * 1024},  # 16 MiB of data: about 8 s
            destination_environment={"keep_image": True}, network_map={"VM Network": subnet["SubnetId"]},
        )

        def position() -> int:
            p = task(api.get_migration(m["id"]), "vm-a", "REPLICATE_DISKS")["progress_updates"]
            return int(p[-1]["current_step"]) if p else 0

        wait_for(lambda: position() >= halfway, 120, 0.1, "half of the disk's data replicated")
        worker = stack.stack.procs["worker"]
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        stack.stack.restart("worker")
        final = wait_final(api, m["id"], timeout=240)
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    events = [e["message"] for e in task(final, "vm-a", "REPLICATE_DISKS")["events"]]
    resumed = [e for e in events if e.startswith("Resuming the sync")]
    assert resumed, f"the replication finished before the kill, or started over: {events}"
    already = int(re.search(r"checkpoint: (\d+) of", resumed[-1]).group(1))  # type: ignore[union-attr]
    started = re.search(r"Replica snapshot (snap-\w+) of disk-0 started", "\n".join(events))
    assert started and started.group(1) in resumed[-1], "resumed into the snapshot the killed attempt wrote"
    done = [e for e in events if e.startswith("Replica of")][-1]
    wrote = int(re.search(r"wrote (\d+) bytes", done).group(1))  # type: ignore[union-attr]
    earlier = int(re.search(r"(\d+) chunk\(s\) written by an earlier attempt", done).group(1))  # type: ignore[union-attr]
    print(f"killed past offset {halfway}; resumed at {already}: {earlier} chunks from the killed attempt, "
          f"{wrote} of {allocated} bytes written after the restart")
    assert already >= halfway and earlier > 0
    assert wrote < allocated, f"the resumed replication sent everything again: {done}"
    mine = _mine(ec2, m["id"], stack)
    assert not [s for s in mine["snapshots"] if {"Key": "sterna:role", "Value": "replica"} in s.get("Tags", [])], \
        "the migration ended: no replica snapshot, finished or not, is left"
    # The instance's disk: the deployment's child of the (resumed) replica snapshot, read whole.
    [snap] = [s for s in mine["snapshots"] if {"Key": "sterna:role", "Value": "import-snapshot"} in s.get("Tags", [])]
    raw = disk.read_bytes()
    assert read_snapshot(ebs, snap["SnapshotId"], len(raw)) == raw


def test_aws_endpoint_errors_are_clear(stack: RunningStack, conn_info: dict[str, Any]) -> None:
    with stack.client() as api:
        region = api.create_endpoint("bad-region", "aws", {**conn_info, "region": "xx-nowhere-9"})
        result = api.validate_endpoint(region["id"])
        assert result["valid"] is False and "xx-nowhere-9" in result["message"]
        good = api.create_endpoint("aws-ok", "aws", conn_info)
        assert api.validate_endpoint(good["id"])["valid"] is True
        origin, dest, _src = _endpoints(api, stack, conn_info)
        m = api.create_migration(origin_endpoint_id=origin, destination_endpoint_id=dest, instances=["vm-a"],
                                 network_map={"VM Network": "subnet-00000000deadbeef"})
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "ERROR"
    validate = task(final, "vm-a", "VALIDATE_MIGRATION_INPUTS")
    assert "subnet-00000000deadbeef" in (validate["exception_details"] or "")
    assert "Traceback" not in (validate["exception_details"] or "")
    assert REGION


def test_ova_to_aws(stack: RunningStack, conn_info: dict[str, Any], ec2: Any, ebs: Any,
                    subnet: dict[str, Any]) -> None:
    from devstack.sample import build_disk
    from tests.providers.ova.packages import build_vmware_ova

    library, _ = inventories(stack, [], 1)
    raw = stack.root / "ova-aws.raw"
    build_disk(raw, size=64 * 1024**2, data_mib=2, seed=5)
    build_vmware_ova(library, "web02", raw)
    with stack.client() as api:
        src = api.create_endpoint("ovas-aws", "ova", {"path": str(library)})
        dest = api.create_endpoint("aws-ova", "aws", conn_info)
        [vm] = api.list_instances(src["id"])
        m = api.create_migration(origin_endpoint_id=src["id"], destination_endpoint_id=dest["id"],
                                 instances=[vm["id"]], network_map={"VM Network": subnet["SubnetId"]},
                                 destination_environment={"flavor_name": "t3.small", "keep_image": True})
        final = wait_final(api, m["id"])
    assert final["last_execution_status"] == "COMPLETED", [t["exception_details"] for t in final["tasks"]]
    mine = _mine(ec2, m["id"], stack)
    [instance] = mine["instances"]
    assert instance["InstanceType"] == "t3.small" and instance["SubnetId"] == subnet["SubnetId"]
    [snap] = [s for s in mine["snapshots"] if {"Key": "sterna:role", "Value": "import-snapshot"} in s.get("Tags", [])]
    assert read_snapshot(ebs, snap["SnapshotId"], raw.stat().st_size) == raw.read_bytes()
