"""Deployments of a local -> AWS (moto) transfer: each instance's root is a child of the replica snapshot,
the replica snapshot and its record stay as they were, and a cancelled deployment leaves nothing.

moto ignores RegisterImage's block-device mappings and StartSnapshot's ParentSnapshotId: what the AMI's
root is, and whose child it is, is read from the requests moto received (its recorder) and the tags.
OS morphing is skipped (it needs a bootable guest and minutes of TCG): the child then holds no blocks;
``tests/activities/test_replica_deploy.py`` shows a morph's blocks going up.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_aws_transfer import events_of, own_blocks, start_snapshot_bodies
from tests.api.test_transfers import task_of
from tests.conftest import RunningStack, wait_for
from tests.helpers import inventories
from tests.peers.moto import Recorder, conn_info, ebs, ec2, moto_url, subnet

pytestmark = pytest.mark.slow
__all__ = ["conn_info", "ebs", "ec2", "moto_url", "subnet"]


def tagged(ec2: Any, action_id: str) -> dict[str, list[str]]:
    """What AWS holds for an action: live instances, images and snapshots tagged with its id."""
    mine = [{"Name": "tag:sterna:migration-id", "Values": [action_id]}]
    live = [*mine, {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    return {
        "instances": [i["InstanceId"] for r in ec2.describe_instances(Filters=live)["Reservations"]
                      for i in r["Instances"]],
        "images": [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=mine)["Images"]],
        "snapshots": [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"]],
    }


def replica_state(api: Any, ebs: Any, ec2: Any, transfer_id: str) -> dict[str, Any]:
    """The replica as the record and AWS have it."""
    [volume] = api.get_transfer(transfer_id, include_task_info=True)["info"]["vm-a"]["volumes_info"]
    sid = volume["volume_id"]
    tags = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["Tags"]
    return {"record": volume, "blocks": own_blocks(ebs, sid), "tags": sorted((t["Key"], t["Value"]) for t in tags)}


def deployed_root(recorder: Recorder, deployment_id: str) -> str:
    """The root snapshot of the AMI registered for the deployment, as moto received the request."""
    # A retried deploy step (a missed heartbeat on a loaded machine) may register again: one root either way.
    [root] = {c["BlockDeviceMapping.1.Ebs.SnapshotId"] for c in recorder.ec2_calls("RegisterImage")
              if deployment_id in c["Name"]}
    return str(root)


def deploy(api: Any, recorder: Recorder, transfer_id: str) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    """A deployment without OS morphing: (its final state, its AMI's root snapshot, StartSnapshot requests)."""
    recorder.start()
    try:
        d = api.wait_deployment(api.create_deployment(transfer_id, skip_os_morphing=True)["id"], 300)
    finally:
        recorder.stop()
    assert d["last_execution_status"] == "COMPLETED", d
    return d, deployed_root(recorder, d["id"]), start_snapshot_bodies(recorder)


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_aws_replica_deploys_twice_from_children_of_the_replica_snapshot_and_cancels_clean(
    stack: RunningStack, conn_info: dict[str, Any], ec2: Any, ebs: Any, subnet: dict[str, Any], moto_url: str
) -> None:
    src, _ = inventories(stack, ["vm-a"], data_mib=8)
    disk = src / "vm-a" / "disk-0.raw"
    recorder = Recorder(moto_url)
    env = {"flavor_name": "t3.small", "security_group_ids": [subnet["GroupId"]], "keep_image": True}
    with stack.client() as api:
        a = api.create_endpoint(f"inv-{src.name}", "local", {"path": str(src)})
        b = api.create_endpoint(f"aws-{src.name}", "aws", conn_info)
        t = api.create_transfer(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["vm-a"],
                                skip_os_morphing=True, network_map={"VM Network": subnet["SubnetId"]},
                                destination_environment=env)
        for n in range(2):
            if n:
                with disk.open("r+b") as f:
                    f.seek(3 * 512 * 1024)
                    f.write(b"\x42" * 4096)
            e = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
            assert e["status"] == "COMPLETED", e
        found = re.search(r"into snapshot (snap-\w+)", next(m for m in events_of(e) if "up to date" in m))
        assert found
        replica = found.group(1)
        before = replica_state(api, ebs, ec2, t["id"])
        assert before["record"]["volume_id"] == replica and before["record"]["replica_state"]["trusted"] is True

        # keep_image: the AMI and its root snapshot stay, to be looked at.
        d1, root1, started = deploy(api, recorder, t["id"])
        # Every attempt (a retried one too, on a loaded machine) started a child of the replica snapshot.
        assert started and {s.get("ParentSnapshotId") for s in started} == {replica}, started
        kept = tagged(ec2, d1["id"])
        assert kept["snapshots"] == [root1] and root1 != replica, "the AMI's root is the deployment's child"
        assert own_blocks(ebs, root1) == {}, "no OS morphing: the child holds no blocks of its own"
        child_tags = {x["Key"]: x["Value"] for x in ec2.describe_snapshots(SnapshotIds=[root1])["Snapshots"][0]["Tags"]}
        assert child_tags["sterna:parent-snapshot"] == replica
        [instance] = ec2.describe_instances(InstanceIds=kept["instances"])["Reservations"][0]["Instances"]
        assert kept["images"] == [instance["ImageId"]]
        assert replica_state(api, ebs, ec2, t["id"]) == before, "the replica and its record are unchanged"

        # The default (keep_image false): the AMI and the child go once the instance runs.
        api.update_transfer(t["id"], destination_environment={**env, "keep_image": False})
        d2, root2, started = deploy(api, recorder, t["id"])
        assert started and {s.get("ParentSnapshotId") for s in started} == {replica}, started
        uploads = [m["message"] for m in task_of(d2, "DEPLOY_INSTANCE_RESOURCES")["events"]]
        assert any(f"into snapshot {root2}, a child of replica snapshot {replica}" in m for m in uploads), uploads
        left = tagged(ec2, d2["id"])
        assert left["images"] == [] and left["snapshots"] == [] and len(left["instances"]) == 1, left
        assert replica_state(api, ebs, ec2, t["id"]) == before

        # A cancel while the replica is read down (OS morphing asked for, 1 MiB/s): nothing is left.
        api.update_transfer(t["id"], destination_environment={**env, "bandwidth_limit": 1024**2})
        d3 = api.create_deployment(t["id"], skip_os_morphing=False)

        def reading() -> bool:
            task = task_of(api.get_deployment(d3["id"]), "CREATE_TRANSFER_DISK_SNAPSHOTS")
            return any("Reading replica snapshot" in p["message"] for p in task["progress_updates"])

        wait_for(reading, 120, 0.1, "the replica snapshot being read down")
        api.cancel_deployment(d3["id"])
        final = api.wait_deployment(d3["id"], 120)
        assert final["last_execution_status"] == "CANCELED", final
        assert task_of(final, "CREATE_TRANSFER_DISK_SNAPSHOTS")["status"] == "CANCELED"
        assert tagged(ec2, d3["id"]) == {"instances": [], "images": [], "snapshots": []}
        assert not (Path(stack.settings.scratch) / d3["id"]).exists(), "the base went with the scratch space"
        assert replica_state(api, ebs, ec2, t["id"]) == before
