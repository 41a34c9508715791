"""The EBS reader and writer as ``diskio`` endpoints: snapshot to snapshot, the way the copier drives them."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from core.errors import ProviderError, TransferError
from diskio.copier import copy_disk
from providers.aws.ebs import EbsSnapshotSource, EbsSnapshotTarget
from providers.aws.session import AwsClients, AwsConnection
from tests.peers.moto import REGION
from tests.providers.aws.awshelpers import Ctx, pattern

BLOCK = 512 * 1024
GiB = 1024**3


async def test_snapshot_to_snapshot_copy_keeps_every_byte(
    ebs: Any, guest_volumes: Any, ec2: Any, tmp_path: Path
) -> None:
    # A source snapshot holding 3 non-zero blocks and one zero block (moto-side seeding, see conftest).
    volume_id = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    data = pattern(1, BLOCK) + bytes(BLOCK) + pattern(2, 2 * BLOCK) + bytes(3 * BLOCK) + b"tail" * 1000
    guest_volumes.write(volume_id, data)
    source_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]

    target_id = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
    src = EbsSnapshotSource(ebs, source_id, GiB)
    dst = EbsSnapshotTarget(ebs, target_id, GiB)
    ctx = Ctx(tmp_path)
    result = await copy_disk(src, dst, checkpoint=None, on_progress=ctx.progress, chunk_size=BLOCK)

    assert dst.completed  # the copier's flush is CompleteSnapshot
    assert result.chunks_total == 4  # only the listed blocks are visited
    assert sorted(dst.written) == [0, 2, 3, 7]
    assert dst.changed_blocks_count == 4
    copy = EbsSnapshotSource(ebs, target_id, GiB)
    assert copy.read(0, len(data)) == data
    assert src.blocks_fetched == 4



def test_the_snapshot_wait_ends_when_completed_fails_on_error_and_stops_when_told(
        conn_info: dict[str, Any], ec2: Any) -> None:
    """``wait_snapshots`` polls the snapshots' state; a cancelled activity's ``stop`` ends it at the next poll
    (an EC2 waiter would hold the activity until the snapshot completed, minutes on AWS)."""
    clients = AwsClients(AwsConnection.from_info(conn_info))
    clients.poll_delay = 0.05
    volume_id = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    sid = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    # moto completes a snapshot at once; AWS keeps it pending for minutes. The server's record says which.
    snapshot = ec2_backends[DEFAULT_ACCOUNT_ID][REGION].snapshots[sid]
    snapshot.status = "pending"
    stop = threading.Event()
    failed: list[BaseException] = []

    def wait() -> None:
        try:
            clients.wait_snapshots([sid], delay=5, timeout=600, stop=stop)
        except BaseException as exc:  # the test inspects it
            failed.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    waiter.join(2)
    assert waiter.is_alive() and not failed, ("the wait ended while the snapshot was pending", failed)
    stop.set()
    waiter.join(30)
    assert not waiter.is_alive() and len(failed) == 1 and isinstance(failed[0], TransferError), failed

    snapshot.status = "completed"
    clients.wait_snapshots([sid], delay=5, timeout=60)  # returns
    snapshot.status = "error"
    with pytest.raises(ProviderError, match=f"snapshot {sid} failed"):
        clients.wait_snapshots([sid], delay=5, timeout=60)
