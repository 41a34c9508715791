"""``aws`` (moto) -> ``local`` transfer: the second execution reads only the blocks EBS ListChangedBlocks
reports between the previous execution's snapshot (kept as the baseline) and the new one.

moto's ListChangedBlocks only walks the *first* snapshot's blocks (moto 5.2: a block that was empty
then and holds data now is not reported, where AWS reports it), so the guest here changes blocks
that already held data. That is a limit of the peer, stated, not a property of the code.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_transfers import task_of
from tests.conftest import RunningStack
from tests.helpers import inventories
from tests.peers.moto import REGION, conn_info, ebs, ec2, guest_volumes, moto_url
from worker.sample import build_disk

pytestmark = pytest.mark.slow
__all__ = ["REGION", "conn_info", "ebs", "ec2", "guest_volumes", "moto_url"]

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
