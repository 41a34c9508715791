"""``aws`` (moto) -> ``local`` transfer: the second execution reads only the blocks EBS ListChangedBlocks
reports between the previous execution's snapshot (kept as the baseline) and the new one.

moto's ListChangedBlocks only walks the *first* snapshot's blocks (moto 5.2: a block that was empty
then and holds data now is not reported, where AWS reports it), so the guest here changes blocks
that already held data. That is a limit of the peer, stated, not a property of the code.
"""

from __future__ import annotations

import base64
import json
import random
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from devstack.sample import build_disk
from tests.api.test_transfers import task_of
from tests.conftest import RunningStack
from tests.helpers import inventories
from tests.peers.moto import REGION, Recorder, conn_info, ebs, ec2, guest_volumes, moto_url, subnet

pytestmark = pytest.mark.slow
__all__ = ["REGION", "conn_info", "ebs", "ec2", "guest_volumes", "moto_url", "subnet"]

EBS_BLOCK = 512 * 1024


def events(execution: dict[str, Any]) -> list[str]:
    return [e["message"] for e in task_of(execution, "REPLICATE_DISKS", "web-aws")["events"]]


def wrote(execution: dict[str, Any]) -> int:
    events = [e["message"] for e in task_of(execution, "REPLICATE_DISKS", "web-aws")["events"]]
    done = next(m for m in events if m.startswith("Replica of"))
    return int(re.search(r"wrote (\d+) bytes", done).group(1))  # type: ignore[union-attr]


def read_bytes(execution: dict[str, Any]) -> int:
    done = next(m for m in events(execution) if m.startswith("Replica of"))
    return int(re.search(r"read (\d+) bytes", done).group(1))  # type: ignore[union-attr]


def same(expected: Path, replica: Path) -> bool:
    return subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", str(expected), str(replica)],
                          check=False).returncode == 0


def kept(ec2: Any, transfer_id: str) -> list[str]:
    f = [{"Name": "tag:sterna:migration-id", "Values": [transfer_id]},
         {"Name": "tag:sterna:role", "Values": ["change-marker"]}]
    return [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=f)["Snapshots"]]


# The database backend plays no part in what this checks: one backend keeps the suite's time down.
@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_aws_to_local_transfer_reads_only_changed_blocks(
    stack: RunningStack, conn_info: dict[str, Any], ec2: Any, guest_volumes: Any, tmp_path: Path
) -> None:
    image = tmp_path / "guest.raw"
    build_disk(image, size=64 * 1024**2, data_mib=4, seed=31)
    ami = ec2.register_image(Name="base-t", RootDeviceName="/dev/sda1", VirtualizationType="hvm")["ImageId"]
    inst = ec2.run_instances(ImageId=ami, InstanceType="t3.small", MinCount=1, MaxCount=1, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-aws"}]}])["Instances"][0]
    volume = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    data = bytearray(image.read_bytes())
    guest_volumes.write(volume, bytes(data))
    expected = tmp_path / "expected.raw"

    def expect() -> None:  # the 8 GiB volume: the guest's 64 MiB, zero-extended
        expected.write_bytes(bytes(data))
        subprocess.run(["truncate", "-s", "8G", str(expected)], check=True)

    _, dst = inventories(stack, [], 1)
    with stack.client() as api:
        a = api.create_endpoint(f"aws-src-{dst.name}", "aws", conn_info)
        b = api.create_endpoint(f"kvm-{dst.name}", "local", {"path": str(dst)})
        t = api.create_transfer(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["web-aws"],
                                skip_os_morphing=True, destination_environment={"verify_boot": False})
        e1 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e1["status"] == "COMPLETED", e1
        [replica] = (dst / ".sterna-replicas" / t["id"] / "web-aws").glob("*.raw")
        expect()
        assert same(expected, replica)
        [baseline] = kept(ec2, t["id"])

        # The guest rewrites 4 EBS blocks that held data (see the module docstring).
        full = [i for i in range(len(data) // EBS_BLOCK) if any(data[i * EBS_BLOCK:(i + 1) * EBS_BLOCK])]
        changed_blocks = full[1::max(1, len(full) // 4)][:4]
        for n, i in enumerate(changed_blocks):
            data[i * EBS_BLOCK + 4096:i * EBS_BLOCK + 4096 + 8192] = bytes([0xA0 + n]) * 8192
        guest_volumes.write(volume, bytes(data))

        e2 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e2["status"] == "COMPLETED", e2
        read, written = read_bytes(e2), wrote(e2)
        changed = len(changed_blocks) * EBS_BLOCK
        print(f"\nEBS ListChangedBlocks: first execution read {read_bytes(e1)} bytes; second read {read} "
              f"(changed blocks: {changed} bytes) and wrote {written}")
        assert any(f"changed since marker {baseline}" in m for m in events(e2)), events(e2)
        assert read <= changed
        # Each changed 8 KiB lands in one 64 KiB replica chunk.
        assert written <= len(changed_blocks) * 64 * 1024
        expect()
        assert same(expected, replica)
        assert kept(ec2, t["id"]) != [baseline] and len(kept(ec2, t["id"])) == 1, "one baseline, the newest"
        removed = api.delete_transfer_disks(t["id"])["removed"]
        assert kept(ec2, t["id"]) == [], removed


def start_snapshot_bodies(recorder: Recorder) -> list[dict[str, Any]]:
    """StartSnapshot requests (EBS direct, JSON) moto received: it ignores ParentSnapshotId, the
    recorder shows it was sent."""
    text = requests.get(f"{recorder.url}/moto-api/recorder/download-recording", timeout=30).text
    out = []
    for line in text.splitlines():
        entry = json.loads(line)
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        if entry.get("method") == "POST" and str(entry.get("url", "")).rstrip("/").endswith("/snapshots"):
            out.append(json.loads(body))
    return out


def own_blocks(ebs: Any, snapshot_id: str) -> dict[int, bytes]:
    page = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    return {b["BlockIndex"]: ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=b["BlockIndex"],
                                                    BlockToken=b["BlockToken"])["BlockData"].read()
            for b in page.get("Blocks", [])}


@pytest.mark.parametrize("stack", ["postgresql"], indirect=True)
def test_local_to_aws_replica_is_a_chain_of_snapshots(stack: RunningStack, conn_info: dict[str, Any], ec2: Any,
                                                      ebs: Any, subnet: dict[str, Any], moto_url: str) -> None:
    """Each execution writes only the changed blocks into a child of the last replica snapshot.

    moto keeps no inheritance (StartSnapshot's ParentSnapshotId is accepted and ignored): a child
    there holds only the blocks written into it, which is what lets this test see that only the
    changed blocks moved. On AWS the child reads as the whole disk; here the test composes the chain
    itself (the child's blocks over its parent's) to read it back.
    """
    src, _ = inventories(stack, ["vm-a"], data_mib=8)
    disk = src / "vm-a" / "disk-0.raw"
    recorder = Recorder(moto_url)
    with stack.client() as api:
        a = api.create_endpoint(f"inv-{src.name}", "local", {"path": str(src)})
        b = api.create_endpoint(f"aws-{src.name}", "aws", conn_info)
        t = api.create_transfer(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["vm-a"],
                                skip_os_morphing=True, network_map={"VM Network": subnet["SubnetId"]},
                                destination_environment={"flavor_name": "t3.small",
                                                         "security_group_ids": [subnet["GroupId"]]})
        e1 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e1["status"] == "COMPLETED", e1
        first = re.search(r"into snapshot (snap-\w+)", next(m for m in events_of(e1) if "up to date" in m))
        assert first
        parent = first.group(1)
        data = bytearray(disk.read_bytes())
        base = own_blocks(ebs, parent)
        assert compose([base], len(data)) == bytes(data), "the first snapshot holds the source"

        # Four 64 KiB writes in four EBS blocks, and one block of data wiped to zeros.
        used = [i for i in range(len(data) // EBS_BLOCK) if any(data[i * EBS_BLOCK:(i + 1) * EBS_BLOCK])]
        touched = random.Random(2).sample(range(len(data) // EBS_BLOCK), 4)
        wiped = next(i for i in used if i not in touched)
        with disk.open("r+b") as f:
            for n, i in enumerate(touched):
                f.seek(i * EBS_BLOCK + 128 * 1024)
                f.write(bytes([0x50 + n]) * 64 * 1024)
            f.seek(wiped * EBS_BLOCK)
            f.write(bytes(EBS_BLOCK))
        recorder.start()
        try:
            e2 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        finally:
            recorder.stop()
        assert e2["status"] == "COMPLETED", e2
        done = next(m for m in events_of(e2) if "up to date" in m)
        second = re.search(r"into snapshot (snap-\w+)", done)
        assert second
        child = second.group(1)
        print(f"\nlocal -> AWS: second execution: {done}")
        # Every attempt (a retried one too, on a loaded machine) started a child of the last good snapshot...
        parents = [body.get("ParentSnapshotId") for body in start_snapshot_bodies(recorder)]
        assert parents and set(parents) == {parent}, parents
        # ...and an abandoned attempt's child did not stay.
        f = [{"Name": "tag:sterna:migration-id", "Values": [t["id"]]}]
        assert {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=f)["Snapshots"]} \
            == {parent, child}
        blocks = own_blocks(ebs, child)
        assert sorted(blocks) == sorted([*touched, wiped]), "the child holds the changed blocks only"
        assert blocks[wiped] == bytes(EBS_BLOCK)
        assert compose([base, blocks], len(data)) == disk.read_bytes()
        api.delete_transfer_disks(t["id"])
        assert ec2.describe_snapshots(OwnerIds=["self"], Filters=f)["Snapshots"] == []


def events_of(execution: dict[str, Any]) -> list[str]:
    return [e["message"] for e in task_of(execution, "REPLICATE_DISKS", "vm-a")["events"]]


def compose(chain: list[dict[int, bytes]], size: int) -> bytes:
    """A chain's content: each snapshot's blocks over its ancestors' (what AWS does for a child)."""
    out = bytearray(size)
    for blocks in chain:
        for index, block in blocks.items():
            out[index * EBS_BLOCK:(index + 1) * EBS_BLOCK] = block[:max(0, size - index * EBS_BLOCK)]
    return bytes(out)


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_cancelled_execution_to_aws_keeps_the_last_good_snapshot(stack: RunningStack, conn_info: dict[str, Any],
                                                                 ec2: Any, ebs: Any, subnet: dict[str, Any]) -> None:
    """A cancel while a child is being written: CANCELED, the child is deleted, the replica is still the
    last good snapshot (trusted), and the next execution chains from it to the source's content."""
    from tests.conftest import wait_for

    src, _ = inventories(stack, ["vm-a"], data_mib=8)
    disk = src / "vm-a" / "disk-0.raw"
    with stack.client() as api:
        a = api.create_endpoint(f"inv-{src.name}", "local", {"path": str(src)})
        b = api.create_endpoint(f"aws-{src.name}", "aws", conn_info)
        t = api.create_transfer(origin_endpoint_id=a["id"], destination_endpoint_id=b["id"], instances=["vm-a"],
                                skip_os_morphing=True, network_map={"VM Network": subnet["SubnetId"]},
                                destination_environment={"flavor_name": "t3.small",
                                                         "security_group_ids": [subnet["GroupId"]]})
        e1 = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert e1["status"] == "COMPLETED", e1
        parent = re.search(r"into snapshot (snap-\w+)", next(m for m in events_of(e1) if "up to date" in m))
        assert parent
        base = own_blocks(ebs, parent.group(1))
        with disk.open("r+b") as f:
            f.seek(40 * EBS_BLOCK)
            f.write(b"\x77" * EBS_BLOCK)

        # 1 MiB/s: reading the disk's ~17 MiB of data lasts long enough to cancel in between.
        api.update_transfer(t["id"], source_environment={"bandwidth_limit": 1024**2})
        e = api.execute_transfer(t["id"])
        wait_for(lambda: any("started as a child" in m for m in events_of(api.get_execution(t["id"], e["id"]))),
                 120, 0.1, "the child snapshot being written")
        api.cancel_execution(t["id"], e["id"])
        final = api.wait_execution(t["id"], e["id"], 60)
        assert final["status"] == "CANCELED"
        [state] = api.get_transfer(t["id"], include_task_info=True)["info"]["vm-a"]["volumes_info"]
        assert state["volume_id"] == parent.group(1) and state["replica_state"]["trusted"] is True
        f = [{"Name": "tag:sterna:migration-id", "Values": [t["id"]]}]
        assert [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=f)["Snapshots"]] \
            == [parent.group(1)], "the cancelled child is gone"

        api.update_transfer(t["id"], source_environment={"bandwidth_limit": None})
        again = api.wait_execution(t["id"], api.execute_transfer(t["id"])["id"], 300)
        assert again["status"] == "COMPLETED", again
        child = re.search(r"into snapshot (snap-\w+)", next(m for m in events_of(again) if "up to date" in m))
        assert child
        assert compose([base, own_blocks(ebs, child.group(1))], disk.stat().st_size) == disk.read_bytes()
