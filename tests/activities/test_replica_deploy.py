"""A deployment of a replica kept as EBS snapshots, at activity level, on moto: the replica chain is
read down into a local base, an overlay takes the "morph" (qemu-io writes), and only the blocks
that differ go up, as a child of the replica snapshot.

moto keeps no inheritance (``ParentSnapshotId`` is ignored): each snapshot lists only the blocks
written into it. That is what lets the test see which blocks each one holds; the expected disk is
composed from the chain here, as AWS composes it.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from activities.replica_deploy import snapshot_overlay, upload_delta
from core.models import DiskLocator
from diskio.base import DiskSource
from diskio.keepalive import HEARTBEAT_EVERY
from providers.aws import tags as t
from providers.aws.chain import open_chain
from providers.aws.provider import AwsProvider
from providers.base import ActionContext, TransferContext, TransferProgress
from tests.peers.moto import conn_info, ebs, ec2, fast_polling, moto_url, provider
from tests.providers.aws.awshelpers import Ctx, export_info, pattern
from workflows.transfer_types import OverlayInput
from workflows.types import DiskStepInput, StepInput, TaskRef

__all__ = ["conn_info", "ebs", "ec2", "fast_polling", "moto_url", "provider"]

BLOCK = 512 * 1024
SIZE = 16 * BLOCK


class _Recorder:
    """The part of ``TaskRecorder`` these steps use."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def aevent(self, message: str, level: str = "INFO") -> None:
        self.events.append(message)

    def event(self, message: str, level: str = "INFO") -> None:
        self.events.append(message)

    async def progress(self, message: str, total: int | None, already_done: int = 0) -> Any:
        async def transfer(_p: Any) -> None:
            return None

        return SimpleNamespace(transfer=transfer)


def services(provider: AwsProvider) -> Any:
    async def resolve(endpoint_id: str, capability: type, migration_id: str | None = None) -> AwsProvider:
        return provider

    return SimpleNamespace(provider=resolve, store=SimpleNamespace(action_project=lambda action_id: None))


def write_replica(provider: AwsProvider, blocks: dict[int, bytes], parent: str | None) -> str:
    sid, target = provider.start_replica_snapshot({}, "tr-1", "vm-a", "disk-0", SIZE, parent)
    for index, data in blocks.items():
        target.write(index * BLOCK, data)
    target.flush()
    return sid


def own_blocks(ebs: Any, snapshot_id: str) -> dict[int, bytes]:
    page = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    return {b["BlockIndex"]: ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=b["BlockIndex"],
                                                    BlockToken=b["BlockToken"])["BlockData"].read()
            for b in page.get("Blocks", [])}


def compose(chain: list[dict[int, bytes]]) -> bytes:
    out = bytearray(SIZE)
    for blocks in chain:
        for index, block in blocks.items():
            out[index * BLOCK:(index + 1) * BLOCK] = block
    return bytes(out)


def step(workdir: Path, skip: bool = False) -> StepInput:
    disk = DiskLocator(disk_id="disk-0", size_bytes=SIZE)
    return StepInput(task=TaskRef(migration_id="dep-1", instance="vm-a", task_type="CREATE_TRANSFER_DISK_SNAPSHOTS"),
                     origin_endpoint_id="a", destination_endpoint_id="b", export_info=export_info([disk]),
                     workdir=str(workdir), skip_os_morphing=skip)


def qemu_io(overlay: str, *commands: str) -> None:
    args = [a for c in commands for a in ("-c", c)]
    subprocess.run(["qemu-io", "-f", "qcow2", *args, overlay], check=True, capture_output=True)


def morph(overlay: str, expected: bytes, tmp_path: Path) -> bytes:
    """What OS morphing could do: new bytes in block 1; block 2 rewritten with what it held; block 3
    zeroed; block 14 (zeros in the replica) written. Returns the disk the overlay now reads as."""
    (tmp_path / "same").write_bytes(expected[2 * BLOCK:2 * BLOCK + 65536])
    qemu_io(overlay, f"write -P 0x5a {BLOCK + 4096} 8192", f"write -P 0x11 {14 * BLOCK + 100} 300",
            f"write -z {3 * BLOCK} {BLOCK}", f"write -s {tmp_path / 'same'} {2 * BLOCK} 65536")
    subprocess.run(["qemu-img", "convert", "-O", "raw", overlay, str(tmp_path / "morphed.raw")], check=True)
    return (tmp_path / "morphed.raw").read_bytes()


def read_all(src: DiskSource) -> bytes:
    return src.read(0, src.size)


@pytest.fixture
def chain(provider: AwsProvider) -> tuple[list[str], bytes]:
    """A replica of two executions: the first wrote blocks 0-5, the second rewrote 3, zeroed 4, wrote 9."""
    root = write_replica(provider, {i: pattern(i, BLOCK) for i in range(6)}, None)
    child = write_replica(provider, {3: pattern(30, BLOCK), 4: bytes(BLOCK), 9: pattern(90, BLOCK)}, root)
    expected = bytearray(b"".join(pattern(i, BLOCK) for i in range(6)).ljust(SIZE, b"\0"))
    expected[3 * BLOCK:4 * BLOCK] = pattern(30, BLOCK)
    expected[4 * BLOCK:5 * BLOCK] = bytes(BLOCK)
    expected[9 * BLOCK:10 * BLOCK] = pattern(90, BLOCK)
    return [root, child], bytes(expected)


async def test_the_morph_s_changed_blocks_become_a_child_of_the_replica_snapshot(
    provider: AwsProvider, ebs: Any, ec2: Any, chain: tuple[list[str], bytes], tmp_path: Path
) -> None:
    (root, replica), expected = chain
    before = {sid: own_blocks(ebs, sid) for sid in (root, replica)}
    rec, svc = _Recorder(), services(provider)
    disk = DiskLocator(disk_id="disk-0", size_bytes=SIZE, format="ebs-snapshot", path=replica)
    inp = OverlayInput(step=step(tmp_path), disks=[disk])
    view = await snapshot_overlay(svc, inp, rec, tmp_path, disk, "disk-0")
    assert view.format == "qcow2" and view.details["replica_snapshot"] == replica
    assert Path(view.details["base"]).read_bytes() == expected, "the base is the chain, composed"
    assert view.path is not None

    morphed = morph(view.path, expected, tmp_path)
    assert morphed[2 * BLOCK:3 * BLOCK] == expected[2 * BLOCK:3 * BLOCK]

    up = await upload_delta(svc, DiskStepInput(step=step(tmp_path), disk=view), rec, Ctx(tmp_path).ctx)
    child = up.disk.details["snapshot_id"]
    blocks = own_blocks(ebs, child)
    assert sorted(blocks) == [1, 3, 14], "exactly the blocks the morph changed; block 2's bytes are the same"
    assert blocks[3] == bytes(BLOCK)
    assert compose([before[root], before[replica], blocks]) == morphed, "the chain reads as base + changes"
    assert read_all(open_chain(provider._clients(), child, SIZE)) == morphed

    tags = t.as_dict(ec2.describe_snapshots(SnapshotIds=[child])["Snapshots"][0]["Tags"])
    assert tags[t.PARENT_TAG] == replica and tags[t.MIGRATION_TAG] == "dep-1"
    assert tags[t.ROLE_TAG] == t.ROLE_IMPORT_SNAPSHOT and tags[t.UPLOAD_TAG] == t.UPLOAD_COMPLETE
    assert {sid: own_blocks(ebs, sid) for sid in (root, replica)} == before, "the replica is untouched"

    # A retried upload finds the completed child instead of writing another.
    again = await upload_delta(svc, DiskStepInput(step=step(tmp_path), disk=view), rec, Ctx(tmp_path).ctx)
    assert again.disk.details["snapshot_id"] == child and again.disk.details["reused"] is True



async def test_the_upload_heartbeats_while_it_compares_the_overlay_with_the_replica(
    provider: AwsProvider, ebs: Any, chain: tuple[list[str], bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A migration to AWS on transfers ended in a heartbeat timeout under TCG load: this comparison (every
    # block the morph touched, read twice) ran before the upload's first progress, and reported nothing.
    import diskio.overlay

    (_root, replica), expected = chain
    svc, rec = services(provider), cast(Any, _Recorder())
    disk = DiskLocator(disk_id="disk-0", size_bytes=SIZE, format="ebs-snapshot", path=replica)
    view = await snapshot_overlay(svc, OverlayInput(step=step(tmp_path), disks=[disk]), rec, tmp_path, disk, "disk-0")
    assert view.path is not None
    morphed = morph(view.path, expected, tmp_path)
    compare, comparing, reported = diskio.overlay.changed_blocks, threading.Event(), threading.Event()
    during: list[TransferProgress] = []

    def slow_compare(*args: Any) -> Any:
        # A loaded host: the comparison outlasts a heartbeat period; it ends once one came meanwhile.
        comparing.set()
        try:
            if not reported.wait(3 * HEARTBEAT_EVERY):
                raise AssertionError("no heartbeat while the overlay was compared with the replica")
            return compare(*args)
        finally:
            comparing.clear()

    monkeypatch.setattr(diskio.overlay, "changed_blocks", slow_compare)

    async def progress(p: TransferProgress) -> None:
        if comparing.is_set():
            during.append(p)
            reported.set()

    up = await upload_delta(svc, DiskStepInput(step=step(tmp_path), disk=view), rec,
                            TransferContext(workdir=tmp_path, progress=progress))
    assert during, "no heartbeat while the overlay was compared with the replica"
    assert all(p.bytes_done == 0 and p.checkpoint == [] for p in during), "nothing is claimed done yet"
    assert sorted(own_blocks(ebs, up.disk.details["snapshot_id"])) == [1, 3, 14]
    assert read_all(open_chain(provider._clients(), up.disk.details["snapshot_id"], SIZE)) == morphed

async def test_without_os_morphing_the_child_has_no_blocks_and_nothing_is_read(
    provider: AwsProvider, ebs: Any, ec2: Any, chain: tuple[list[str], bytes], tmp_path: Path
) -> None:
    (root, replica), _expected = chain
    rec, svc = _Recorder(), services(provider)
    disk = DiskLocator(disk_id="disk-0", size_bytes=SIZE, format="ebs-snapshot", path=replica)
    view = await snapshot_overlay(svc, OverlayInput(step=step(tmp_path, skip=True), disks=[disk]), rec,
                                  tmp_path, disk, "disk-0")
    assert view.path is None and not (tmp_path / "base").exists(), "the replica was not read down"
    up = await upload_delta(svc, DiskStepInput(step=step(tmp_path, skip=True), disk=view), rec, Ctx(tmp_path).ctx)
    child = up.disk.details["snapshot_id"]
    assert own_blocks(ebs, child) == {}

    # A failed (or cancelled) deployment's cleanup deletes the child, and only the child.
    before = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    provider.cleanup({}, "vm-a", [up.disk], None, succeeded=False, action=ActionContext(action_id="dep-1"))
    assert {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]} == before - {child}
    assert {root, replica} <= before - {child}


def test_a_snapshot_that_lists_inherited_blocks_ends_the_walk(
    provider: AwsProvider, ec2: Any, chain: tuple[list[str], bytes]
) -> None:
    """Where the service composes the chain itself (AWS), its newest snapshot lists more blocks than
    were written into it: that one listing is the whole disk. Shown on moto by tagging the child
    as if it had been written 1 block."""
    (_root, replica), expected = chain
    composed = open_chain(provider._clients(), replica, SIZE)
    assert len(composed.layers) == 2 and read_all(composed) == expected
    ec2.create_tags(Resources=[replica], Tags=[{"Key": t.BLOCKS_TAG, "Value": "1"}])
    alone = open_chain(provider._clients(), replica, SIZE)
    assert [layer.snapshot_id for layer in alone.layers] == [replica]
